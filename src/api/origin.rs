//! Origin checks for hrefs taken from API responses. Pure; sends nothing.
//!
//! Credentials go only to the configured base URL of an API family: an href is followed only when its
//! scheme, host and port equal the base's, and it carries no userinfo. Everything else is refused
//! before any request is built.

use reqwest::Url;

/// An href from a response that may not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The href is not a URL at all.
    #[error("href is not a valid URL")]
    Unparseable,
    /// Scheme, host or port differ from the configured base URL, or the URL carries userinfo.
    #[error("href points at {found}, not the configured origin {expected}")]
    Foreign {
        /// The configured origin (`scheme://host:port`).
        expected: String,
        /// The href's origin, without path, query or userinfo.
        found: String,
    },
}

/// `scheme://host:port` of a URL, with the scheme's default port filled in.
pub fn origin_of(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Parses `href` and accepts it only if it is on the same origin as `base`.
pub fn check_href(base: &Url, href: &str) -> Result<Url, OriginError> {
    let url = Url::parse(href.trim()).map_err(|_| OriginError::Unparseable)?;
    check_url(base, &url)?;
    Ok(url)
}

/// Accepts `url` only if it is on the same origin as `base` and carries no credentials of its own.
pub fn check_url(base: &Url, url: &Url) -> Result<(), OriginError> {
    let same = url.scheme() == base.scheme()
        && url.host_str().is_some()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    if same {
        Ok(())
    } else {
        Err(OriginError::Foreign {
            expected: origin_of(base),
            found: origin_of(url),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://netverify.com").unwrap()
    }

    #[test]
    fn same_origin_is_accepted_with_default_port_spelled_out() {
        assert!(
            check_href(
                &base(),
                "https://netverify.com/api/netverify/v2/scans/x/images/front"
            )
            .is_ok()
        );
        assert!(check_href(&base(), "https://netverify.com:443/a").is_ok());
        assert!(check_href(&base(), "https://NETVERIFY.com/a").is_ok());
    }

    #[test]
    fn every_foreign_form_is_refused() {
        for href in [
            "http://netverify.com/a",
            "https://netverify.com:8443/a",
            "https://evil.com/a",
            "https://netverify.com.evil.com/a",
            "https://netverify.com./a",
            "https://user:pw@netverify.com/a",
            "https://user@netverify.com/a",
            "https://169.254.169.254/latest/meta-data",
            "https://xn--ntverify-b1a.com/a",
            "file:///etc/passwd",
            "/relative/path",
        ] {
            assert!(check_href(&base(), href).is_err(), "{href} was accepted");
        }
    }

    #[test]
    fn loopback_ports_must_match() {
        let b = Url::parse("http://127.0.0.1:8080").unwrap();
        assert!(check_href(&b, "http://127.0.0.1:8080/x").is_ok());
        assert!(check_href(&b, "http://127.0.0.1:8081/x").is_err());
        assert!(check_href(&b, "http://localhost:8080/x").is_err());
        assert!(check_href(&b, "http://127.0.0.2:8080/x").is_err());
    }
}
