//! The one error type of the codec: every parse says what was wrong, nothing panics.

/// Why a datagram or field could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before `what` was complete.
    #[error("truncated: {what} needs more bytes")]
    Truncated { what: &'static str },
    /// A field holds a value the protocol does not allow.
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    /// The packet is well formed but of a kind this BMC does not speak.
    #[error("unsupported {what}")]
    Unsupported { what: &'static str },
    /// A checksum, authentication code or padding did not verify.
    #[error("{what} does not verify")]
    Integrity { what: &'static str },
}

impl CodecError {
    pub fn invalid(what: &'static str) -> Self {
        CodecError::Invalid { what }
    }
}

pub type Result<T, E = CodecError> = std::result::Result<T, E>;
