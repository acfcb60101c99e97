//! Lists: every list endpoint takes `page` (from 1), `page_size` (1–500, default 50) and
//! `sort` (a field name, `-` in front for descending), plus its own filters, and answers a
//! [`Page`].

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};

pub const MAX_PAGE_SIZE: u32 = 500;
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE: u32 = 1_000_000;

/// Paging and sorting.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<u32>,
    /// The field to sort by; `-` in front for descending (`-created_at`).
    pub sort: Option<String>,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items matching the filters, on all pages.
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

/// A value to sort by.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum SortKey {
    Null,
    Num(f64),
    Text(String),
}

impl From<&str> for SortKey {
    fn from(s: &str) -> Self {
        SortKey::Text(s.to_lowercase())
    }
}
impl From<&String> for SortKey {
    fn from(s: &String) -> Self {
        SortKey::Text(s.to_lowercase())
    }
}
impl From<f64> for SortKey {
    fn from(n: f64) -> Self {
        SortKey::Num(n)
    }
}
impl From<u64> for SortKey {
    fn from(n: u64) -> Self {
        SortKey::Num(n as f64)
    }
}
impl From<u32> for SortKey {
    fn from(n: u32) -> Self {
        SortKey::Num(f64::from(n))
    }
}
impl From<bool> for SortKey {
    fn from(b: bool) -> Self {
        SortKey::Num(if b { 1.0 } else { 0.0 })
    }
}
impl From<chrono::DateTime<chrono::Utc>> for SortKey {
    fn from(t: chrono::DateTime<chrono::Utc>) -> Self {
        SortKey::Num(t.timestamp_micros() as f64)
    }
}
impl<T: Into<SortKey>> From<Option<T>> for SortKey {
    fn from(o: Option<T>) -> Self {
        o.map(Into::into).unwrap_or(SortKey::Null)
    }
}

/// Something a list can sort.
pub trait Sortable {
    /// The fields `sort` accepts.
    const SORT_FIELDS: &'static [&'static str];
    fn sort_key(&self, field: &str) -> SortKey;
}

impl<T: Sortable> Sortable for &T {
    const SORT_FIELDS: &'static [&'static str] = T::SORT_FIELDS;
    fn sort_key(&self, field: &str) -> SortKey {
        (*self).sort_key(field)
    }
}

impl<T> Page<T> {
    /// The same page with its items converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), total: self.total, page: self.page, page_size: self.page_size }
    }
}

impl Paging {
    fn page(&self) -> ApiResult<u32> {
        match self.page {
            None => Ok(1),
            Some(0) => Err(ApiError::field("page", "pages are numbered from 1")),
            Some(p) if p > MAX_PAGE => Err(ApiError::field("page", format!("at most {MAX_PAGE}"))),
            Some(p) => Ok(p),
        }
    }

    fn page_size(&self) -> ApiResult<u32> {
        match self.page_size {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::field("page_size", format!("{n} is out of range; expected 1 to {MAX_PAGE_SIZE}"))),
        }
    }

    /// Sorts `items` (by `sort`, else `default_sort`) and cuts out the page.
    pub fn apply<T: Sortable>(&self, mut items: Vec<T>, default_sort: &str) -> ApiResult<Page<T>> {
        let page = self.page()?;
        let page_size = self.page_size()?;
        let sort = self.sort.as_deref().filter(|s| !s.is_empty()).unwrap_or(default_sort);
        let (desc, field) = match sort.strip_prefix('-') {
            Some(f) => (true, f),
            None => (false, sort.strip_prefix('+').unwrap_or(sort)),
        };
        if !T::SORT_FIELDS.contains(&field) {
            return Err(ApiError::field("sort", format!("cannot sort by `{field}`; sortable fields: {}", T::SORT_FIELDS.join(", "))));
        }
        let mut keyed: Vec<(SortKey, T)> = items.drain(..).map(|t| (t.sort_key(field), t)).collect();
        keyed.sort_by(|a, b| {
            let o = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
            if desc { o.reverse() } else { o }
        });
        let total = keyed.len() as u64;
        let start = (u64::from(page - 1) * u64::from(page_size)).min(total) as usize;
        let items = keyed.into_iter().skip(start).take(page_size as usize).map(|(_, t)| t).collect();
        Ok(Page { items, total, page, page_size })
    }
}

/// Whether `text` contains `q` (case-insensitive); no `q` matches everything.
pub fn matches_q(q: &Option<String>, texts: &[Option<&str>]) -> bool {
    match q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        None => true,
        Some(q) => {
            let q = q.to_lowercase();
            texts.iter().flatten().any(|t| t.to_lowercase().contains(&q))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct N(u32, &'static str);
    impl Sortable for N {
        const SORT_FIELDS: &'static [&'static str] = &["n", "name"];
        fn sort_key(&self, field: &str) -> SortKey {
            match field {
                "n" => self.0.into(),
                _ => self.1.into(),
            }
        }
    }

    #[test]
    fn pages_sort_and_cut() {
        let items = || vec![N(3, "c"), N(1, "a"), N(2, "B")];
        let p = Paging { page: Some(1), page_size: Some(2), sort: Some("-n".into()) }.apply(items(), "n").unwrap();
        assert_eq!(p.items.iter().map(|n| n.0).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(p.total, 3);
        let p = Paging { page: Some(2), page_size: Some(2), sort: Some("name".into()) }.apply(items(), "n").unwrap();
        assert_eq!(p.items.iter().map(|n| n.0).collect::<Vec<_>>(), [3]);
        let p = Paging { page: Some(9), ..Default::default() }.apply(items(), "n").unwrap();
        assert!(p.items.is_empty());
        assert!(Paging { sort: Some("colour".into()), ..Default::default() }.apply(items(), "n").is_err());
        assert!(Paging { page: Some(0), ..Default::default() }.apply(items(), "n").is_err());
        assert!(Paging { page_size: Some(501), ..Default::default() }.apply(items(), "n").is_err());
    }
}
