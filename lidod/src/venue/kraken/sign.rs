//! Kraken REST authentication, exactly as Kraken documents it
//! (docs.kraken.com, "Spot REST Authentication"):
//!
//! ```text
//! API-Key:  the public key
//! API-Sign: base64( HMAC-SHA512( key = base64decode(secret),
//!                                msg = uri_path + SHA256(nonce + post_data) ) )
//! ```
//!
//! `uri_path` is the part of the URL from `/0/private/…`; `post_data` is the
//! form-encoded body exactly as sent, which must carry the same `nonce`.
//! The nonce is an unsigned 64-bit integer that must grow with every call
//! made with one key, also across restarts: [`NonceSource`] gives
//! microseconds since the epoch, bumped past the last one handed out, and
//! keeps its high-water mark in a file.
//!
//! The secret never leaves [`Signer`]: its `Debug` is redacted and no error
//! here carries it.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::venue::file;

/// Why a secret cannot be used. Never contains the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the api secret is not valid base64 (it should be the private key exactly as Kraken shows it)")]
    SecretNotBase64,
    #[error("the api secret is empty")]
    EmptySecret,
}

/// Signs private REST requests with one API secret.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer { secret: <redacted> }")
    }
}

impl Signer {
    /// A signer for the base64 secret ("private key") Kraken issued.
    pub fn new(secret_base64: &str) -> Result<Self, SignError> {
        let trimmed = secret_base64.trim();
        if trimmed.is_empty() {
            return Err(SignError::EmptySecret);
        }
        let secret = BASE64.decode(trimmed).map_err(|_| SignError::SecretNotBase64)?;
        Ok(Self { secret })
    }

    /// The `API-Sign` header for `path` (`/0/private/AddOrder`), `nonce` and
    /// the form-encoded `post_data`, which must contain `nonce=<nonce>`.
    pub fn sign(&self, path: &str, nonce: u64, post_data: &str) -> String {
        api_sign(&self.secret, path, &nonce.to_string(), post_data)
    }
}

/// The bare algorithm over an already decoded secret; `nonce` as it appears
/// in the body.
pub fn api_sign(secret: &[u8], path: &str, nonce: &str, post_data: &str) -> String {
    let mut sha = Sha256::new();
    sha.update(nonce.as_bytes());
    sha.update(post_data.as_bytes());
    let digest = sha.finalize();

    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(secret).expect("hmac takes a key of any length");
    mac.update(path.as_bytes());
    mac.update(&digest);
    BASE64.encode(mac.finalize().into_bytes())
}

/// `application/x-www-form-urlencoded` body from ordered pairs: unreserved
/// characters as they are, everything else percent-encoded (a space as
/// `%20` and `+` as `%2B`, so Kraken's relative prices survive). The
/// signature must be computed over exactly this string.
pub fn form_encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(k.as_ref(), &mut out);
        out.push('=');
        encode_component(v.as_ref(), &mut out);
    }
    out
}

/// Splits a form-encoded body into its pairs, percent-decoding them (`+`
/// reads as a space, as browsers write it). The inverse of [`form_encode`],
/// for checking requests as Kraken does.
pub fn form_decode(body: &str) -> Result<Vec<(String, String)>, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

fn decode_component(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("truncated escape in {s:?}"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape %{hex} in {s:?}"))?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not utf-8"))
}

fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Strictly increasing nonces: microseconds since the Unix epoch, or one
/// more than the last nonce handed out when the clock has not moved past
/// it (two calls in one microsecond, or a clock stepped back).
///
/// With a file ([`NonceSource::load`]) every nonce is written there before
/// it is returned, so a restarted broker never reuses or goes below a nonce
/// it already sent, even if the clock went back in between.
#[derive(Debug)]
pub struct NonceSource {
    path: Option<PathBuf>,
    last: u64,
}

impl NonceSource {
    /// A source that remembers nothing across restarts.
    pub fn in_memory() -> Self {
        Self { path: None, last: 0 }
    }

    /// A source whose high-water mark lives in `path` (created with its
    /// directory on first use). A file that does not hold a number is an
    /// error rather than a silent reset.
    pub fn load(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let last = read_last(&path)?;
        Ok(Self { path: Some(path), last })
    }

    /// The lock file beside a file-backed source's file (`<file>.lock`):
    /// held by the caller from [`Self::next`] until the request carrying
    /// the nonce is sent, so broker processes sharing the file (one API key)
    /// send their nonces in the order they took them. `None` in memory.
    pub fn lock_path(&self) -> Option<PathBuf> {
        self.path.as_ref().map(|p| {
            let mut name = p.as_os_str().to_owned();
            name.push(".lock");
            PathBuf::from(name)
        })
    }

    /// Never hands out a nonce at or below `floor` (the last nonce of a
    /// file this source replaces).
    pub fn raise_floor(&mut self, floor: u64) {
        self.last = self.last.max(floor);
    }

    /// The last nonce handed out (or loaded), 0 if none.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next nonce for now. (Not an `Iterator`: it persists and can fail.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> io::Result<u64> {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        self.next_at(micros)
    }

    /// The next nonce given the clock reads `now_micros`; persisted before
    /// it is returned. On a write error the nonce is not handed out, but it
    /// is still counted as used.
    ///
    /// A file-backed source reads the file first: another process on the
    /// same key may have handed out nonces since (callers hold
    /// [`Self::lock_path`] across this and the send).
    pub fn next_at(&mut self, now_micros: u64) -> io::Result<u64> {
        if let Some(path) = &self.path {
            self.last = self.last.max(read_last(path)?);
        }
        let nonce = now_micros.max(self.last.saturating_add(1));
        self.last = nonce;
        if let Some(path) = &self.path {
            persist(path, nonce)?;
        }
        Ok(nonce)
    }
}

/// The nonce kept in `path`, 0 if there is no file yet.
fn read_last(path: &Path) -> io::Result<u64> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("nonce file {} is corrupt: {e}", path.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Writes `nonce` to `path` atomically.
fn persist(path: &Path, nonce: u64) -> io::Result<()> {
    file::replace(path, format!("{nonce}\n").as_bytes(), file::Access::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kraken's published example ("Spot REST Authentication", the table under
    // "Examples"): a limit buy of 1.25 XBTUSD at 37500.
    const DOC_SECRET: &str = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
    const DOC_NONCE: u64 = 1616492376594;
    const DOC_POST: &str = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
    const DOC_PATH: &str = "/0/private/AddOrder";
    const DOC_SIGN: &str = "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==";

    #[test]
    fn signs_krakens_published_example() {
        let signer = Signer::new(DOC_SECRET).unwrap();
        assert_eq!(signer.sign(DOC_PATH, DOC_NONCE, DOC_POST), DOC_SIGN);
    }

    #[test]
    fn any_change_changes_the_signature() {
        let signer = Signer::new(DOC_SECRET).unwrap();
        assert_ne!(signer.sign("/0/private/Balance", DOC_NONCE, DOC_POST), DOC_SIGN);
        assert_ne!(signer.sign(DOC_PATH, DOC_NONCE + 1, DOC_POST), DOC_SIGN);
        assert_ne!(signer.sign(DOC_PATH, DOC_NONCE, &DOC_POST.replace("1.25", "1.26")), DOC_SIGN);
        let other = Signer::new("c2VjcmV0").unwrap();
        assert_ne!(other.sign(DOC_PATH, DOC_NONCE, DOC_POST), DOC_SIGN);
    }

    #[test]
    fn form_encoding_reproduces_the_documented_body() {
        let body = form_encode(&[
            ("nonce", "1616492376594"),
            ("ordertype", "limit"),
            ("pair", "XBTUSD"),
            ("price", "37500"),
            ("type", "buy"),
            ("volume", "1.25"),
        ]);
        assert_eq!(body, DOC_POST);
        let tricky = [("price", "+1.5%"), ("oflags", "post,fciq"), ("x", "a b")];
        let encoded = form_encode(&tricky);
        assert_eq!(encoded, "price=%2B1.5%25&oflags=post%2Cfciq&x=a%20b");
        let back = form_decode(&encoded).unwrap();
        assert_eq!(back, tricky.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(form_decode("a=b+c&d=").unwrap(), [("a".into(), "b c".into()), ("d".into(), String::new())]);
        assert!(form_decode("a=%zz").is_err());
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let err = Signer::new("not base64 !!").unwrap_err();
        assert_eq!(err, SignError::SecretNotBase64);
        assert!(!err.to_string().contains("!!"));
        assert_eq!(Signer::new("  ").unwrap_err(), SignError::EmptySecret);
        let dbg = format!("{:?}", Signer::new(DOC_SECRET).unwrap());
        assert!(!dbg.contains("kQH5"), "{dbg}");
    }

    #[test]
    fn nonces_increase_even_when_the_clock_does_not() {
        let mut n = NonceSource::in_memory();
        assert_eq!(n.next_at(1_000).unwrap(), 1_000);
        assert_eq!(n.next_at(1_000).unwrap(), 1_001);
        assert_eq!(n.next_at(900).unwrap(), 1_002, "clock stepped back");
        assert_eq!(n.next_at(5_000).unwrap(), 5_000);
        let a = n.next().unwrap();
        let b = n.next().unwrap();
        assert!(b > a && a > 5_000);
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lido-kraken-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn nonces_survive_a_restart_with_the_clock_behind() {
        let dir = scratch_dir("nonce");
        let path = dir.join("sub").join("k1.nonce");
        {
            let mut n = NonceSource::load(&path).unwrap();
            assert_eq!(n.last(), 0);
            assert_eq!(n.next_at(2_000_000).unwrap(), 2_000_000);
            assert_eq!(n.next_at(2_000_000).unwrap(), 2_000_001);
        }
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), "2000001");
        let mut again = NonceSource::load(&path).unwrap();
        assert_eq!(again.last(), 2_000_001);
        // The clock now reads earlier than before the restart.
        assert_eq!(again.next_at(1_500_000).unwrap(), 2_000_002);
        assert_eq!(NonceSource::load(&path).unwrap().last(), 2_000_002);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_nonce_file_is_an_error_not_a_reset() {
        let dir = scratch_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.nonce");
        fs::write(&path, "garbage").unwrap();
        let err = NonceSource::load(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_sources_on_one_file_never_hand_out_the_same_or_a_lower_nonce() {
        // Two broker processes on one key share the file (under its lock).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account/nonce");
        let mut a = NonceSource::load(&path).unwrap();
        let mut b = NonceSource::load(&path).unwrap();
        let mut sent = Vec::new();
        for i in 0..10u64 {
            // The same clock reading for both: the file breaks the tie.
            let now = 1_000 + i / 2;
            sent.push(a.next_at(now).unwrap());
            sent.push(b.next_at(now).unwrap());
        }
        assert!(sent.windows(2).all(|w| w[0] < w[1]), "{sent:?}");
        assert_eq!(b.lock_path().unwrap(), dir.path().join("account/nonce.lock"));
        let mut c = NonceSource::load(dir.path().join("other")).unwrap();
        c.raise_floor(5_000);
        assert_eq!(c.next_at(1_000).unwrap(), 5_001);
    }
}
