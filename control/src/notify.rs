//! Tells people when a run fails (`error_handling.notifications`): a webhook POST of the run
//! summary, signed, and an e-mail through SMTP.
//!
//! Configuration is the `notifications` setting (`PUT /settings`; its `webhook_secret` and
//! SMTP `password` are stored sealed with the master key, opened here when sending):
//! ```json
//! {"notifications": {"webhook_secret": "…",
//!   "smtp": {"host": "mail.internal", "port": 25, "from": "dagg@example.com",
//!            "username": "…", "password": "…", "timeout_seconds": 10}}}
//! ```
//! The webhook body is the JSON [`RunSummary`]; with a `webhook_secret` it carries
//! `X-Dagg-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>` (verify by
//! recomputing it over the raw body), plus `X-Dagg-Event: run.failed` and
//! `X-Dagg-Delivery` (a unique id). A failed POST (network error or 5xx) is tried 3 times in
//! all, 1 s then 2 s apart. E-mail goes over plain SMTP (no TLS in this build: use a relay on
//! the local network). Each delivery's outcome is written to the run's log
//! (`notified` or `notification_failed`); a failed delivery never changes the run.
//!
//! Both go through the egress policy (`dagg_connectors::egress`, docs/security.md): the
//! webhook's host and port are checked before the first attempt, its name resolves
//! through the policy on every connection, and redirects are not followed (a 3xx answer is
//! a failed delivery); the SMTP host is resolved and checked, and the connection goes to
//! the checked address. A refused target is a `notification_failed` entry naming the rule;
//! nothing is sent.

use chrono::{DateTime, Utc};
use dagg_model::RunStatus;
use dagg_model::spec::pipeline::Notifications;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use sha2::Sha256;

use crate::ControlPlane;
use crate::meta::{EventKind, EventLevel, MetaCommand, Run, RunCounts};

/// The setting that configures notifications.
pub const SETTING: &str = "notifications";

/// The `notifications` setting.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Signs webhook bodies (HMAC-SHA256).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The sender address.
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}

fn default_smtp_port() -> u16 {
    25
}

fn default_timeout() -> f64 {
    10.0
}

/// What a notification says about a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// `run.failed`.
    pub event: String,
    pub run_id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub pipeline_version: u32,
    pub status: String,
    pub trigger: crate::meta::Trigger,
    pub error: Option<String>,
    pub counts: RunCounts,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunSummary {
    pub fn of(run: &Run) -> RunSummary {
        RunSummary {
            event: format!("run.{}", run.status),
            run_id: run.id.clone(),
            pipeline_id: run.pipeline_id.clone(),
            pipeline_name: run.pipeline_name.clone(),
            pipeline_version: run.pipeline_version,
            status: run.status.to_string(),
            trigger: run.trigger,
            error: run.error.clone(),
            counts: run.counts,
            started_at: run.started_at,
            finished_at: run.finished_at,
        }
    }

    fn text(&self) -> String {
        let c = &self.counts;
        format!(
            "Pipeline: {} ({}), version {}\nRun: {}\nStatus: {}\nTrigger: {}\nError: {}\nRecords: {} read, {} written, {} dead-lettered\nStarted: {}\nFinished: {}\n",
            self.pipeline_name,
            self.pipeline_id,
            self.pipeline_version,
            self.run_id,
            self.status,
            self.trigger,
            self.error.as_deref().unwrap_or("-"),
            c.records_read,
            c.records_written,
            c.dead_lettered,
            self.started_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into()),
            self.finished_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into()),
        )
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn log(state: &ControlPlane, run_id: &str, level: EventLevel, kind: EventKind, message: String, data: Json) {
    if let Err(e) = state.meta.apply(MetaCommand::run_event(run_id, level, kind, message, data)) {
        tracing::warn!(run = %run_id, "cannot log a notification: {e}");
    }
}

/// A setting as it is stored: secret values sealed with the master key (without one they
/// stay clear, as the start-up warning says). Masked secrets sent back were put back by the
/// caller (`mask::keep_masked`).
pub fn sealed_setting(state: &ControlPlane, mut value: Json) -> Json {
    if let Some(k) = &state.master_key {
        k.encrypt_where(&mut value, &crate::mask::is_secret_key);
    }
    value
}

fn settings(state: &ControlPlane) -> Result<NotifySettings, String> {
    match state.meta.setting(SETTING).map_err(|e| e.to_string())? {
        None | Some(Json::Null) => Ok(NotifySettings::default()),
        Some(mut v) => {
            if let Some(k) = &state.master_key {
                k.decrypt_where(&mut v, &crate::mask::is_secret_key).map_err(|e| format!("the `{SETTING}` setting's secrets: {e}"))?;
            } else if v.to_string().contains(crate::secrets::PREFIX) {
                return Err(format!("the `{SETTING}` setting's secrets are sealed, and no master key is configured"));
            }
            serde_json::from_value(v).map_err(|e| format!("the `{SETTING}` setting is invalid: {e}"))
        }
    }
}

/// Sends the run's notifications when it failed; does nothing otherwise.
pub async fn run_finished(state: &ControlPlane, run: &Run, targets: &Notifications) {
    if run.status != RunStatus::Failed || (targets.webhook.is_none() && targets.email.is_empty()) {
        return;
    }
    let summary = RunSummary::of(run);
    let cfg = match settings(state) {
        Ok(c) => c,
        Err(e) => {
            log(
                state,
                &run.id,
                EventLevel::Warning,
                EventKind::NotificationFailed,
                e.clone(),
                json!({"error": e}),
            );
            return;
        }
    };
    if let Some(url) = &targets.webhook {
        match send_webhook(url, &summary, cfg.webhook_secret.as_deref()).await {
            Ok(status) => log(
                state,
                &run.id,
                EventLevel::Info,
                EventKind::Notified,
                format!("webhook {} answered {status}", shown(url)),
                json!({"channel": "webhook", "status": status}),
            ),
            Err(e) => log(
                state,
                &run.id,
                EventLevel::Warning,
                EventKind::NotificationFailed,
                format!("webhook {}: {e}", shown(url)),
                json!({"channel": "webhook", "error": e}),
            ),
        }
    }
    if !targets.email.is_empty() {
        let r = match &cfg.smtp {
            Some(smtp) => send_email(smtp, &targets.email, &summary).await,
            None => Err(format!(
                "no SMTP server is configured (the `{SETTING}.smtp` setting)"
            )),
        };
        match r {
            Ok(()) => log(
                state,
                &run.id,
                EventLevel::Info,
                EventKind::Notified,
                format!("e-mail sent to {}", targets.email.join(", ")),
                json!({"channel": "email", "to": targets.email}),
            ),
            Err(e) => log(
                state,
                &run.id,
                EventLevel::Warning,
                EventKind::NotificationFailed,
                format!("e-mail to {}: {e}", targets.email.join(", ")),
                json!({"channel": "email", "error": e}),
            ),
        }
    }
}

/// The URL without credentials or query, for logs.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.path()
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

/// POSTs the summary; the final HTTP status, or why it could not be delivered.
pub async fn send_webhook(
    url: &str,
    summary: &RunSummary,
    secret: Option<&str>,
) -> Result<u16, String> {
    use dagg_connectors::egress;

    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{}` is not an HTTP URL", parsed.scheme()));
    }
    egress::check_url(&parsed).await.map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(summary).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        // Names resolve through the egress policy on every connection; a redirect could
        // lead anywhere (the node's own API, a metadata endpoint), so none is followed.
        .dns_resolver(egress::Resolver)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let delivery = uuid::Uuid::new_v4().to_string();
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(u64::from(attempt))).await;
        }
        let mut req = client
            .post(parsed.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("dagg/", env!("CARGO_PKG_VERSION")))
            .header("x-dagg-event", summary.event.as_str())
            .header("x-dagg-delivery", delivery.as_str())
            .body(body.clone());
        if let Some(s) = secret {
            req = req.header("x-dagg-signature", signature(s.as_bytes(), &body));
        }
        match req.send().await {
            Ok(r) if r.status().is_server_error() => last = format!("answered {}", r.status()),
            Ok(r) if r.status().is_success() => return Ok(r.status().as_u16()),
            Ok(r) if r.status().is_redirection() => {
                return Err(format!("answered {} (redirects are not followed)", r.status()));
            }
            Ok(r) => return Err(format!("answered {}", r.status())),
            Err(e) => last = error_chain(&e),
        }
    }
    Err(format!("gave up after 3 attempts: {last}"))
}

/// An error with its causes (a refused name is the resolver's error, inside reqwest's).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Sends the summary by e-mail to `to`.
pub async fn send_email(
    smtp: &SmtpSettings,
    to: &[String],
    summary: &RunSummary,
) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let mut msg = Message::builder()
        .from(
            smtp.from
                .parse()
                .map_err(|e| format!("the sender `{}`: {e}", smtp.from))?,
        )
        .subject(format!(
            "[dagg] pipeline `{}`: run {}",
            summary.pipeline_name, summary.status
        ))
        .header(ContentType::TEXT_PLAIN);
    for addr in to {
        msg = msg.to(addr
            .parse()
            .map_err(|e| format!("the address `{addr}`: {e}"))?);
    }
    let msg = msg.body(summary.text()).map_err(|e| e.to_string())?;
    // Resolved and checked here; the transport connects to the checked address, so a name
    // that answers differently a moment later is not asked again.
    let addrs = dagg_connectors::egress::resolve_checked(&smtp.host, smtp.port)
        .await
        .map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))?;
    let checked = addrs[0].ip().to_string();
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(checked.as_str())
        .port(smtp.port)
        .timeout(Some(std::time::Duration::from_secs_f64(
            smtp.timeout_seconds.clamp(0.1, 300.0),
        )));
    if let (Some(u), Some(p)) = (&smtp.username, &smtp.password) {
        transport = transport.credentials(Credentials::new(u.clone(), p.clone()));
    }
    transport
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
