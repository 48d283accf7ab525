use crate::ErrorDetail;

/// Why a call to Lido failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Lido answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    /// Nothing answered at the URL.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("http error: {0}")]
    Http(#[from] reqwest::Error),
    #[error("websocket error: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The peer sent something that is not what the protocol says.
    #[error("unexpected message from lido: {0}")]
    Protocol(String),
    #[error("connection closed by lido")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("invalid url {0:?}")]
    InvalidUrl(String),
    /// The server's certificate is not signed by a CA this client trusts.
    #[error(
        "certificate of {url} not trusted ({reason}): pass --ca <file> (or set LIDO_CA) with the CA certificate \
         that signed lidod's certificate (for a self-signed one, the certificate itself)"
    )]
    Untrusted { url: String, reason: String },
    /// The TLS set-up (a CA file) is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

impl ClientError {
    /// `err` as [`ClientError::Untrusted`] when the server's certificate was
    /// refused, else as it is.
    pub fn classify(url: &str, err: impl Into<ClientError> + std::error::Error + 'static) -> Self {
        match crate::tls::untrusted(&err) {
            Some(reason) => Self::Untrusted { url: url.to_string(), reason },
            None => err.into(),
        }
    }

    pub fn from_detail(status: u16, detail: ErrorDetail) -> Self {
        Self::Api { status, code: detail.code, message: detail.message }
    }

    /// Lido's answer with an error status: its error body, or the raw text
    /// when something else (a proxy) answered.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<crate::ErrorBody>(body) {
            Ok(b) => Self::from_detail(status, b.error),
            Err(_) => Self::Api {
                status,
                code: "http_error".into(),
                message: String::from_utf8_lossy(body).chars().take(300).collect(),
            },
        }
    }

    /// The API error code, if Lido answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if Lido answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server could not be reached at all, so nothing was
    /// sent and another URL may be tried (a timeout is not: the request may
    /// have been acted on).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Http(e) => e.is_connect(),
            Self::WebSocket(e) => matches!(**e, tokio_tungstenite::tungstenite::Error::Io(_)),
            _ => false,
        }
    }
}
