//! The message connectors' configs, now each in its own file under
//! [`connectors`](crate::spec::connectors); this module keeps the names they had.

pub use crate::spec::connectors::common::PayloadFormat;
pub use crate::spec::connectors::kafka::{KAFKA_ALLOWED_PROPERTIES, KafkaConfig, check_kafka, check_kafka_property};
pub use crate::spec::connectors::nats::{NatsConfig, check_nats};
pub use crate::spec::connectors::rabbitmq::{RabbitmqConfig, check_rabbitmq};
