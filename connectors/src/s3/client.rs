//! The HTTP client under the S3 store: every request's origin goes through the egress
//! policy (resolved, every address checked, with its port) before anything is sent, names
//! resolve through [`egress::Resolver`] on every connection, and a redirect is followed
//! only within its origin.
//!
//! With the admin's ambient credentials on, the AWS credential endpoints the store asks
//! for the node's credentials (the instance metadata service, the container credentials
//! endpoint) are let through although they are link-local — unless the connector's own
//! endpoint is one of them, so that a connector cannot read them as a bucket.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService};
use object_store::{ClientConfigKey, ClientOptions};
use url::{Origin, Url};

use crate::egress::{self, Policy};

/// Where object_store asks for ambient credentials when the environment names no other
/// place: the instance metadata service and the ECS task credentials endpoint.
const CREDENTIAL_ENDPOINTS: [&str; 2] = ["http://169.254.169.254", "http://169.254.170.2"];

/// Builds the store's HTTP clients (data requests and, with ambient credentials, the
/// credential requests) with the egress checks.
#[derive(Debug)]
pub(super) struct EgressConnector {
    timeout: Duration,
    /// Origins let through without the check: the credential endpoints, when the admin
    /// turned ambient credentials on.
    exempt: Arc<HashSet<Origin>>,
}

impl EgressConnector {
    /// `endpoint`: the connector's own endpoint (never exempt).
    pub(super) fn new(timeout: Duration, ambient_credentials: bool, endpoint: Option<&str>) -> EgressConnector {
        let mut exempt = HashSet::new();
        if ambient_credentials {
            let from_env = ["AWS_METADATA_ENDPOINT", "AWS_CONTAINER_CREDENTIALS_FULL_URI"].map(|k| std::env::var(k).ok());
            for text in CREDENTIAL_ENDPOINTS.iter().map(|s| s.to_string()).chain(from_env.into_iter().flatten()) {
                if let Ok(u) = Url::parse(&text) {
                    exempt.insert(u.origin());
                }
            }
            if let Some(own) = endpoint.and_then(|e| Url::parse(e).ok()) {
                exempt.remove(&own.origin());
            }
        }
        EgressConnector { timeout, exempt: Arc::new(exempt) }
    }
}

impl HttpConnector for EgressConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = options.get_config_value(&ClientConfigKey::AllowHttp).is_some_and(|v| v == "true");
        let client = reqwest::Client::builder()
            .user_agent(concat!("dagg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .https_only(!allow_http)
            // As object_store's own client: decompression would break `Content-Length`,
            // which sizes objects.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .dns_resolver(egress::Resolver)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt.previous().last().is_some_and(|prev| prev.origin() == attempt.url().origin());
                if same && attempt.previous().len() <= 10 { attempt.follow() } else { attempt.stop() }
            }))
            .build()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(HttpClient::new(Checked { client, exempt: self.exempt.clone(), passed: Mutex::default() }))
    }
}

/// A client that checks each request's origin first.
#[derive(Debug)]
struct Checked {
    client: reqwest::Client,
    exempt: Arc<HashSet<Origin>>,
    /// Origins that passed, under the policy they passed (a changed policy checks again).
    passed: Mutex<(Option<Arc<Policy>>, HashSet<Origin>)>,
}

impl Checked {
    fn passed(&self, policy: &Arc<Policy>, origin: &Origin) -> bool {
        let mut p = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if !p.0.as_ref().is_some_and(|old| Arc::ptr_eq(old, policy)) {
            *p = (Some(policy.clone()), HashSet::new());
        }
        p.1.contains(origin)
    }

    async fn check(&self, req: &HttpRequest) -> Result<(), HttpError> {
        let url = Url::parse(&req.uri().to_string()).map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let origin = url.origin();
        let policy = egress::current();
        if self.exempt.contains(&origin) || self.passed(&policy, &origin) {
            return Ok(());
        }
        egress::check_url(&url).await.map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let mut p = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if p.0.as_ref().is_some_and(|old| Arc::ptr_eq(old, &policy)) {
            p.1.insert(origin);
        }
        Ok(())
    }
}

#[async_trait]
impl HttpService for Checked {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.check(&req).await?;
        HttpService::call(&self.client, req).await
    }
}
