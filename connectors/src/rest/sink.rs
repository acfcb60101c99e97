//! The `rest_api` sink: sends records in batches of `batch_size` as one JSON array per
//! request, with the source's retries. See the module docs of [`super`] for what it
//! guarantees (at least once) and which answers refuse records.

use dagg_model::Record;
use dagg_model::spec::connector::{HttpMethod, RestApiConfig, Role};
use reqwest::{StatusCode, Url};
use serde_json::Value as Json;

use super::{Http, excerpt};
use crate::{ConnectorError, SinkConnector};

/// The `rest_api` sink. Built by [`crate::open_sink`].
pub struct RestSink {
    http: Http,
    url: Url,
    method: HttpMethod,
    batch_size: usize,
}

impl RestSink {
    pub fn open(c: &RestApiConfig) -> Result<RestSink, ConnectorError> {
        let http = Http::new(c)?;
        let mut url = Url::parse(&c.url).map_err(|e| ConnectorError::Config(format!("`{}` is not a URL: {e}", super::shown_url_text(&c.url))))?;
        for (k, v) in &c.query_params {
            url.query_pairs_mut().append_pair(k, v);
        }
        Ok(RestSink { http, url, method: c.method_for(Role::Sink), batch_size: c.batch_size() })
    }
}

#[async_trait::async_trait]
impl SinkConnector for RestSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        let mut refused = Vec::new();
        for (n, chunk) in records.chunks(self.batch_size.max(1)).enumerate() {
            let first = n * self.batch_size.max(1);
            let body = Json::Array(chunk.iter().map(|r| serde_json::to_value(r).expect("a record serializes")).collect());
            let a = self.http.send(self.method, self.url.clone(), Some(&body)).await?;
            let shown = self.http.shown(&a.url);
            match a.status {
                s if s.is_success() => {}
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                    // About the endpoint or the credentials, not these records.
                    return Err(ConnectorError::Http { url: shown, reason: format!("{}: {}", a.status, excerpt(&a.body)) });
                }
                s if s.is_client_error() => {
                    let reason = format!("{} {shown} answered {s}: {}", self.method, excerpt(&a.body));
                    refused.extend((first..first + chunk.len()).map(|i| (i, reason.clone())));
                }
                s => return Err(ConnectorError::Http { url: shown, reason: format!("unexpected answer {s}: {}", excerpt(&a.body)) }),
            }
        }
        Ok(refused)
    }

    /// Every batch was sent when written: nothing waits.
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Sent batches cannot be taken back.
    async fn abort(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
