//! Where a bucket location points: `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix`. Anything else is a local path.

use std::fmt;
use std::path::Path;

/// The cloud a bucket URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Amazon S3 and S3-compatible stores (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`).
    Azure,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::S3 => "s3://",
            Scheme::Gcs => "gs://",
            Scheme::Azure => "az://",
        }
    }
}

/// A bucket and the prefix the dataset lives under (no leading or trailing `/`; may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    /// The cloud.
    pub scheme: Scheme,
    /// The bucket (container for Azure).
    pub bucket: String,
    /// The dataset's prefix inside the bucket.
    pub prefix: String,
}

impl BucketUrl {
    /// `None` for a local path; `Some(Err(why))` for a bucket URL that is malformed.
    pub fn parse(location: &Path) -> Option<Result<BucketUrl, String>> {
        let text = location.to_str()?;
        let scheme = [Scheme::S3, Scheme::Gcs, Scheme::Azure]
            .into_iter()
            .find(|s| text.starts_with(s.prefix()))?;
        let rest = &text[scheme.prefix().len()..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty()
            || !bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Some(Err(format!(
                "{text}: the bucket name must be letters, digits, '-', '.' or '_'"
            )));
        }
        if prefix.split('/').any(|s| s == "." || s == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Some(Err(format!(
                "{text}: the prefix must be plain path segments (no '.', '..' or empty ones)"
            )));
        }
        Some(Ok(BucketUrl {
            scheme,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    /// The object key of `relative` (a dataset path such as `commits/{run}.json`).
    pub fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    /// The dataset path of `key`, when it is under the prefix.
    pub fn relative<'a>(&self, key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.scheme.prefix(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Result<BucketUrl, String>> {
        BucketUrl::parse(Path::new(s))
    }

    #[test]
    fn bucket_urls_parse_and_local_paths_do_not() {
        let u = parse("s3://my-bucket/exports/2026/").unwrap().unwrap();
        assert_eq!(
            (u.scheme, u.bucket.as_str(), u.prefix.as_str()),
            (Scheme::S3, "my-bucket", "exports/2026")
        );
        assert_eq!(u.key("commits/a.json"), "exports/2026/commits/a.json");
        assert_eq!(
            u.relative("exports/2026/commits/a.json"),
            Some("commits/a.json")
        );
        assert_eq!(u.relative("exports/2026x/a"), None);
        assert_eq!(u.to_string(), "s3://my-bucket/exports/2026");
        let bare = parse("gs://b").unwrap().unwrap();
        assert_eq!((bare.scheme, bare.key("x")), (Scheme::Gcs, "x".to_string()));
        assert_eq!(parse("az://c/p").unwrap().unwrap().scheme, Scheme::Azure);
        assert!(parse("export").is_none() && parse("/tmp/s3:/x").is_none());
        assert!(parse("s3:///p").unwrap().is_err());
        assert!(parse("s3://b/../p").unwrap().is_err());
        assert!(parse("s3://b/a//p").unwrap().is_err());
    }
}
