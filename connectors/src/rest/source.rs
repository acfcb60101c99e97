//! The `rest_api` source: fetches one page at a time and hands its records out.
//!
//! # Positions and checkpoints
//! A record's position is `unit` = the page's ordinal in this read (0-based), `seq` = its
//! 1-based index in the page; people see `{"url", "page", "record"}`. The checkpoint is
//! `{"version": 1, "page", "skip", "done", "since", "max"}`: `page` says how to ask for the
//! page being read (`{"offset": n}`, `{"page": n}`, `{"cursor": c}`, `{"url": u}` or
//! `{"first": true}`), `skip` how many of its items were returned. A resume asks for that
//! page again and skips them, which is exact when the API serves the same page again (true
//! of cursor and Link URLs; for offsets and page numbers, while no records are inserted
//! before it).
//!
//! With `incremental`, `since` is the high-water mark this read filters by (records whose
//! `cursor_field` is not greater are skipped) and `max` the largest value returned. A
//! `done` checkpoint starts the next run at the first page with `since` = `max`; without
//! `incremental`, it starts the next run from the first page with no filter.

use dagg_model::spec::connector::{HttpMethod, Pagination, PaginationType, RestApiConfig, RestIncremental, Role};
use dagg_model::{Batch, Map, Position, Record, Value};
use reqwest::Url;
use serde_json::{Value as Json, json};

use super::{Http, at_path, excerpt, link_next};
use crate::{BadInput, ConnectorError, SourceBatch, SourceConnector};

const CHECKPOINT_VERSION: u64 = 1;

/// How to ask for a page.
#[derive(Clone, Debug, PartialEq)]
enum Page {
    First,
    Offset(u64),
    Number(u64),
    Cursor(String),
    Url(String),
}

impl Page {
    fn to_json(&self) -> Json {
        match self {
            Page::First => json!({"first": true}),
            Page::Offset(n) => json!({"offset": n}),
            Page::Number(n) => json!({"page": n}),
            Page::Cursor(c) => json!({"cursor": c}),
            Page::Url(u) => json!({"url": u}),
        }
    }

    fn from_json(v: &Json) -> Option<Page> {
        let o = v.as_object()?;
        if o.get("first").is_some() {
            Some(Page::First)
        } else if let Some(n) = o.get("offset") {
            n.as_u64().map(Page::Offset)
        } else if let Some(n) = o.get("page") {
            n.as_u64().map(Page::Number)
        } else if let Some(c) = o.get("cursor") {
            c.as_str().map(|c| Page::Cursor(c.to_string()))
        } else {
            o.get("url")?.as_str().map(|u| Page::Url(u.to_string()))
        }
    }
}

enum Item {
    Record(Record),
    Bad(String, String),
}

/// A fetched page being handed out.
struct Fetched {
    items: Vec<Item>,
    /// Items handed out (or skipped) so far.
    pos: usize,
    /// The page after it, `None` when it is the last.
    next: Option<Page>,
    ordinal: u32,
}

/// The `rest_api` source. Built by [`crate::open_source`].
pub struct RestSource {
    http: Http,
    base: Url,
    shown: String,
    method: HttpMethod,
    query_params: Vec<(String, String)>,
    pagination: Option<Pagination>,
    records_path: Option<String>,
    incremental: Option<RestIncremental>,
    /// The page being read and how many of its items were returned.
    page: Page,
    skip: usize,
    done: bool,
    since: Option<Value>,
    max: Option<Value>,
    current: Option<Fetched>,
    pages_read: u32,
}

impl RestSource {
    pub fn open(c: &RestApiConfig) -> Result<RestSource, ConnectorError> {
        let http = Http::new(c)?;
        let base = Url::parse(&c.url).map_err(|e| ConnectorError::Config(format!("`{}` is not a URL: {e}", super::shown_url_text(&c.url))))?;
        let shown = http.shown(&base);
        Ok(RestSource {
            http,
            base,
            shown,
            method: c.method_for(Role::Source),
            query_params: c.query_params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            pagination: c.pagination.clone().filter(|p| p.kind != PaginationType::None),
            records_path: c.records_path.clone(),
            incremental: c.incremental.clone(),
            page: Page::First,
            skip: 0,
            done: false,
            since: None,
            max: None,
            current: None,
            pages_read: 0,
        })
    }

    /// The URL of a page.
    fn url_of(&self, page: &Page) -> Result<Url, ConnectorError> {
        if let Page::Url(u) = page {
            return Url::parse(u).map_err(|e| ConnectorError::Seek(format!("`{u}` is not a URL: {e}")));
        }
        let mut url = self.base.clone();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.query_params {
                q.append_pair(k, v);
            }
            if let Some(p) = &self.pagination {
                let size = p.page_size().to_string();
                match (p.kind, page) {
                    (PaginationType::Offset, _) => {
                        let offset = if let Page::Offset(n) = page { *n } else { 0 };
                        q.append_pair(&p.offset_param, &offset.to_string());
                        q.append_pair(&p.limit_param, &size);
                    }
                    (PaginationType::Page, _) => {
                        let n = if let Page::Number(n) = page { *n } else { p.start_page };
                        q.append_pair(&p.page_param, &n.to_string());
                        q.append_pair(&p.limit_param, &size);
                    }
                    (PaginationType::Cursor | PaginationType::LinkHeader, _) => {
                        if let Page::Cursor(c) = page {
                            q.append_pair(&p.cursor_param, c);
                        }
                        if let Some(s) = p.page_size {
                            q.append_pair(&p.limit_param, &s.to_string());
                        }
                    }
                    (PaginationType::None, _) => {}
                }
            }
            if let (Some(inc), Some(since)) = (&self.incremental, &self.since)
                && let Some(param) = &inc.param
            {
                q.append_pair(param, &since.to_text());
            }
        }
        Ok(url)
    }

    /// Fetches the current page and works out the next.
    async fn fetch(&mut self) -> Result<Fetched, ConnectorError> {
        let page = self.page.clone();
        let url = self.url_of(&page)?;
        let body = if self.method == HttpMethod::Post { Some(json!({})) } else { None };
        let answer = self.http.send(self.method, url, body.as_ref()).await?;
        let shown = self.http.shown(&answer.url);
        if !answer.status.is_success() {
            return Err(ConnectorError::Http { url: shown, reason: format!("{}: {}", answer.status, excerpt(&answer.body)) });
        }
        let doc: Json = if answer.body.iter().all(u8::is_ascii_whitespace) {
            Json::Array(vec![])
        } else {
            serde_json::from_slice(&answer.body)
                .map_err(|e| ConnectorError::Http { url: shown.clone(), reason: format!("the response is not JSON ({e}): {}", excerpt(&answer.body)) })?
        };
        let list = records_of(&doc, self.records_path.as_deref()).map_err(|reason| ConnectorError::Http { url: shown.clone(), reason })?;
        let n = list.len() as u64;
        let items: Vec<Item> = list
            .into_iter()
            .map(|v| match Value::from(&v) {
                Value::Object(m) => Item::Record(m),
                other => Item::Bad(v.to_string(), format!("a record must be a JSON object, found {}", other.type_name())),
            })
            .collect();
        self.pages_read += 1;
        let mut next = match &self.pagination {
            None => None,
            Some(p) => match p.kind {
                PaginationType::None => None,
                PaginationType::Offset => {
                    let at = if let Page::Offset(o) = page { o } else { 0 };
                    (n >= u64::from(p.page_size()) && n > 0).then_some(Page::Offset(at + n))
                }
                PaginationType::Page => {
                    let at = if let Page::Number(o) = page { o } else { p.start_page };
                    (n >= u64::from(p.page_size()) && n > 0).then_some(Page::Number(at + 1))
                }
                PaginationType::Cursor => {
                    let found = p.cursor_path.as_deref().and_then(|cp| at_path(&doc, cp));
                    let c = match found {
                        Some(Json::String(s)) => Some(s.clone()),
                        Some(Json::Number(num)) => Some(num.to_string()),
                        _ => None,
                    };
                    // The same cursor again would loop forever.
                    c.filter(|c| !c.is_empty() && page != Page::Cursor(c.clone())).map(Page::Cursor)
                }
                PaginationType::LinkHeader => link_next(&answer.headers, &answer.url).map(|u| Page::Url(u.to_string())),
            },
        };
        if let Some(max) = self.pagination.as_ref().and_then(|p| p.max_pages)
            && u64::from(self.pages_read) >= max
        {
            next = None;
        }
        tracing::debug!(url = %shown, records = n, last = next.is_none(), "page");
        Ok(Fetched { items, pos: 0, next, ordinal: self.pages_read - 1 })
    }

    /// Whether a record passes the incremental filter (and moves `max`).
    fn keep(&mut self, r: &Record) -> bool {
        let Some(inc) = &self.incremental else { return true };
        let Some(v) = r.get(&inc.cursor_field).filter(|v| !v.is_null()) else {
            // No cursor value: it cannot be placed, so it is read every time.
            return true;
        };
        if let Some(since) = &self.since
            && v.compare(since) != Some(std::cmp::Ordering::Greater)
        {
            return false;
        }
        if self.max.as_ref().is_none_or(|m| v.compare(m) == Some(std::cmp::Ordering::Greater)) {
            self.max = Some(v.clone());
        }
        true
    }
}

/// The records of a response: at `records_path`, else the body if it is an array, else
/// its one array under `data`, `results` or `items`, else the body as one record.
fn records_of(doc: &Json, path: Option<&str>) -> Result<Vec<Json>, String> {
    if let Some(p) = path {
        return match at_path(doc, p) {
            Some(Json::Array(a)) => Ok(a.clone()),
            Some(Json::Null) | None => Ok(vec![]),
            Some(other @ Json::Object(_)) => Ok(vec![other.clone()]),
            Some(other) => Err(format!("`records_path` `{p}` holds {}, not a list of records", dagg_model::spec::reader::json_type(other))),
        };
    }
    match doc {
        Json::Array(a) => Ok(a.clone()),
        Json::Object(o) => {
            let arrays: Vec<&Vec<Json>> = ["data", "results", "items"].iter().filter_map(|k| o.get(*k).and_then(Json::as_array)).collect();
            match arrays.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Ok(vec![doc.clone()]),
                _ => Err("the response has several of `data`, `results` and `items`; set `records_path`".into()),
            }
        }
        Json::Null => Ok(vec![]),
        other => Err(format!("the response is {}, not records; set `records_path`", dagg_model::spec::reader::json_type(other))),
    }
}

#[async_trait::async_trait]
impl SourceConnector for RestSource {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        let max = max.max(1);
        loop {
            if self.current.is_none() {
                if self.done {
                    return Ok(None);
                }
                let mut f = self.fetch().await?;
                f.pos = self.skip.min(f.items.len());
                self.current = Some(f);
            }
            let mut f = self.current.take().expect("a page is loaded");
            let mut records = Vec::new();
            let mut positions = Vec::new();
            let mut bad = Vec::new();
            while f.pos < f.items.len() && records.len() < max {
                let i = f.pos;
                f.pos += 1;
                let pos = Position { unit: f.ordinal, seq: i as u64 + 1 };
                match std::mem::replace(&mut f.items[i], Item::Bad(String::new(), String::new())) {
                    Item::Record(r) => {
                        if self.keep(&r) {
                            records.push(r);
                            positions.push(pos);
                        }
                    }
                    Item::Bad(raw, reason) => bad.push(BadInput { position: pos, raw, reason }),
                }
            }
            if f.pos >= f.items.len() {
                // The page is used up: the checkpoint moves to the next one.
                self.skip = 0;
                match f.next.take() {
                    Some(next) => self.page = next,
                    None => {
                        self.done = true;
                        if self.incremental.is_some() && self.max.is_some() {
                            self.since = self.max.clone();
                        }
                    }
                }
            } else {
                self.skip = f.pos;
                self.current = Some(f);
            }
            if !records.is_empty() || !bad.is_empty() {
                return Ok(Some(SourceBatch { batch: Batch { records, positions, units: None }, bad }));
            }
        }
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = Map::with_capacity(3);
        m.push_unchecked("url", Value::from(self.shown.as_str()));
        m.push_unchecked("page", Value::Int(i64::from(pos.unit) + 1));
        m.push_unchecked("record", Value::Int(pos.seq as i64));
        Value::Object(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        let v = |x: &Option<Value>| x.as_ref().map(|v| serde_json::to_value(v).expect("a value serializes"));
        json!({
            "version": CHECKPOINT_VERSION,
            "page": self.page.to_json(),
            "skip": self.skip,
            "done": self.done,
            "since": v(&self.since),
            "max": v(&self.max),
        })
    }

    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let bad = |what: &str| ConnectorError::Seek(format!("{what} (checkpoint: {checkpoint})"));
        if checkpoint.get("version").and_then(Json::as_u64) != Some(CHECKPOINT_VERSION) {
            return Err(bad(&format!("not a REST source checkpoint of version {CHECKPOINT_VERSION}")));
        }
        let page = checkpoint.get("page").and_then(Page::from_json).ok_or_else(|| bad("`page` is not a page"))?;
        let skip = checkpoint.get("skip").and_then(Json::as_u64).ok_or_else(|| bad("`skip` must be a whole number"))? as usize;
        let done = checkpoint.get("done").and_then(Json::as_bool).ok_or_else(|| bad("`done` must be true or false"))?;
        let val = |k: &str| checkpoint.get(k).filter(|v| !v.is_null()).map(Value::from);
        self.current = None;
        self.pages_read = 0;
        if done {
            // The previous run read everything: this one starts over, past its high-water mark.
            self.page = Page::First;
            self.skip = 0;
            self.done = false;
            self.since = if self.incremental.is_some() { val("max").or_else(|| val("since")) } else { None };
            self.max = self.since.clone();
        } else {
            self.page = page;
            self.skip = skip;
            self.done = false;
            self.since = val("since");
            self.max = val("max");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_where_the_docs_say() {
        let arr = json!([{"a": 1}]);
        assert_eq!(records_of(&arr, None).unwrap().len(), 1);
        assert_eq!(records_of(&json!({"data": [{"a": 1}, {"a": 2}], "next": "x"}), None).unwrap().len(), 2);
        assert_eq!(records_of(&json!({"id": 1}), None).unwrap(), vec![json!({"id": 1})]);
        assert!(records_of(&json!({"data": [], "items": []}), None).is_err());
        assert_eq!(records_of(&json!({"x": {"y": [{"a": 1}]}}), Some("x.y")).unwrap().len(), 1);
        assert!(records_of(&json!({"x": 3}), Some("x")).is_err());
    }

    #[test]
    fn pages_round_trip_through_checkpoints() {
        for p in [Page::First, Page::Offset(200), Page::Number(3), Page::Cursor("c".into()), Page::Url("https://x/y".into())] {
            assert_eq!(Page::from_json(&p.to_json()), Some(p));
        }
    }
}
