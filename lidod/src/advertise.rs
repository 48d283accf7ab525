//! Advertise addresses: the URL other hosts dial to reach this process
//! (`--advertise-url`, `LIDO_ADVERTISE_URL`, `[node] advertise_url`), as
//! opposed to the address it binds. A node tells its IMs this URL on
//! check-in; IMs hand it to algos in sessions and dial its watch socket.
//!
//! Without one, the bound address is advertised, unless it is unspecified
//! (`0.0.0.0`, `::`): no other host can dial that, so the node says so at
//! start and IMs refuse its check-in ([`unreachable_reason`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// The flag, env variable and config key, named in every error about them.
pub const HOW_TO_SET: &str = "--advertise-url (LIDO_ADVERTISE_URL, or [node] advertise_url)";

/// The URLs a process uses for itself: the one it advertises to other hosts
/// and the one its own children (brokers, hosted traders) dial on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Urls {
    /// What other hosts dial: the advertise URL, else the bound address.
    pub advertised: String,
    /// What processes on this host dial: the bound address, or loopback
    /// with the bound port when bound to an unspecified address.
    pub local: String,
    /// True when no advertise URL was given and the bound address is
    /// unspecified: `advertised` then names an address nobody can dial.
    pub unreachable: bool,
}

/// Checks an advertise URL: `http://` or `https://`, a host that is not an
/// unspecified address, nothing after the port. Returns it without a
/// trailing `/`. A port of 0 stands for the port actually bound (for
/// `--listen HOST:0`) and is replaced by [`resolve`].
pub fn validate(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = Url::parse(trimmed).map_err(|e| {
        anyhow::anyhow!(
            "advertise URL {url:?} is not a URL ({e}); give {HOW_TO_SET} as http://HOST:PORT or https://HOST:PORT"
        )
    })?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "advertise URL {url:?} must start with http:// or https://, the scheme the node serves; set {HOW_TO_SET}"
    );
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        anyhow::bail!("advertise URL {url:?} has no host; give {HOW_TO_SET} as http://HOST:PORT");
    };
    let unspecified =
        host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    anyhow::ensure!(
        !unspecified,
        "advertise URL {url:?} names an unspecified address, which no other host can dial; give {HOW_TO_SET} the address or DNS name other hosts reach this one at"
    );
    anyhow::ensure!(
        parsed.path() == "/" && parsed.query().is_none() && parsed.fragment().is_none(),
        "advertise URL {url:?} must be only scheme://HOST[:PORT], without a path, query or fragment"
    );
    anyhow::ensure!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "advertise URL {url:?} must not hold a user name or password"
    );
    Ok(trimmed.to_string())
}

/// The URLs of a process bound to `bound`, serving `https` or not, given
/// its configured advertise URL (already [`validate`]d or not: it is
/// checked again). Fails when the URL is invalid or its scheme is not the
/// one served.
pub fn resolve(configured: Option<&str>, bound: SocketAddr, https: bool) -> anyhow::Result<Urls> {
    let scheme = if https { "https" } else { "http" };
    let local_ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let local = format!("{scheme}://{}", SocketAddr::new(local_ip, bound.port()));
    let Some(configured) = configured else {
        return Ok(Urls { advertised: format!("{scheme}://{bound}"), local, unreachable: bound.ip().is_unspecified() });
    };
    let url = validate(configured)?;
    let mut parsed = Url::parse(&url)?;
    anyhow::ensure!(
        parsed.scheme() == scheme,
        "advertise URL {url:?} says {}:// but this process serves {scheme}:// (TLS is {}); fix {HOW_TO_SET} or the TLS settings",
        parsed.scheme(),
        if https { "on" } else { "off" }
    );
    let advertised = if parsed.port() == Some(0) {
        parsed
            .set_port(Some(bound.port()))
            .map_err(|()| anyhow::anyhow!("cannot put port {} in advertise URL {url:?}", bound.port()))?;
        parsed.as_str().trim_end_matches('/').to_string()
    } else {
        url
    };
    Ok(Urls { advertised, local, unreachable: false })
}

/// Why an IM cannot use the URL a node advertises, if it cannot: one an
/// unspecified address (a node bound to `0.0.0.0` without an advertise
/// URL) or not an http(s) URL with a host.
pub fn unreachable_reason(node: &str, api_url: &str) -> Option<String> {
    match validate(api_url) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "node {node} advertises {api_url:?}, which this InfrastructureManager cannot dial ({e}); start the node with {HOW_TO_SET} set to the URL other hosts reach it at, e.g. http://10.0.0.5:7700"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn good_urls_pass_and_lose_their_trailing_slash() {
        assert_eq!(validate("http://10.0.0.5:7700/").unwrap(), "http://10.0.0.5:7700");
        assert_eq!(validate("https://node-1.lidod-node:7700").unwrap(), "https://node-1.lidod-node:7700");
        assert_eq!(validate("http://[2001:db8::1]:7700").unwrap(), "http://[2001:db8::1]:7700");
    }

    #[test]
    fn bad_urls_are_refused_with_what_to_set() {
        for (url, says) in [
            ("ftp://10.0.0.5:7700", "http:// or https://"),
            ("ws://10.0.0.5:7700", "http:// or https://"),
            ("10.0.0.5:7700", "not a URL"),
            ("http://0.0.0.0:7700", "unspecified"),
            ("http://[::]:7700", "unspecified"),
            ("http://10.0.0.5:7700/lido", "without a path"),
            ("http://u:p@10.0.0.5:7700", "user name"),
            ("not a url", "not a URL"),
            ("http://", "not a URL"),
        ] {
            let err = validate(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
            assert!(err.contains(url), "the error names the URL: {err}");
        }
        let err = validate("ftp://x").unwrap_err().to_string();
        assert!(err.contains("--advertise-url"), "{err}");
    }

    #[test]
    fn the_bound_address_is_advertised_only_when_it_is_specified() {
        let urls = resolve(None, addr("10.0.0.5:7700"), false).unwrap();
        assert_eq!(
            urls,
            Urls {
                advertised: "http://10.0.0.5:7700".into(),
                local: "http://10.0.0.5:7700".into(),
                unreachable: false
            }
        );
        let urls = resolve(None, addr("0.0.0.0:7700"), false).unwrap();
        assert!(urls.unreachable);
        assert_eq!(urls.local, "http://127.0.0.1:7700");
        let urls = resolve(None, addr("[::]:7700"), true).unwrap();
        assert!(urls.unreachable);
        assert_eq!(urls.local, "https://[::1]:7700");
    }

    #[test]
    fn an_advertise_url_wins_and_port_zero_means_the_bound_port() {
        let urls = resolve(Some("http://ny-1.example:7700"), addr("0.0.0.0:7700"), false).unwrap();
        assert_eq!(urls.advertised, "http://ny-1.example:7700");
        assert_eq!(urls.local, "http://127.0.0.1:7700");
        assert!(!urls.unreachable);
        let urls = resolve(Some("http://ny-1.example:0"), addr("0.0.0.0:41234"), false).unwrap();
        assert_eq!(urls.advertised, "http://ny-1.example:41234");
        let err = resolve(Some("http://ny-1.example:7700"), addr("0.0.0.0:7700"), true).unwrap_err().to_string();
        assert!(err.contains("serves https://"), "{err}");
    }

    #[test]
    fn an_im_names_the_flag_when_it_cannot_dial_a_node() {
        let why = unreachable_reason("n1", "http://0.0.0.0:7700").unwrap();
        assert!(why.contains("node n1") && why.contains("--advertise-url"), "{why}");
        assert_eq!(unreachable_reason("n1", "http://10.0.0.5:7700"), None);
    }
}
