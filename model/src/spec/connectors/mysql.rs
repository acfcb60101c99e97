//! `connector_type: mysql` — a MySQL or MariaDB table or query as a source, a table as a
//! destination. Its config is the shared [`DatabaseConfig`], checked for this engine.

use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::sql::{DatabaseConfig, Engine};
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};

/// The `mysql` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "mysql",
    aliases: &[],
    summary: "A MySQL or MariaDB table or query as a source, a table as a destination.",
    roles: Roles::Both,
    icon: "database",
    status: Status::Implemented { parse, schema: schema_of::<DatabaseConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    super::sql::parse(Engine::Mysql, config, path, role, errs)
}
