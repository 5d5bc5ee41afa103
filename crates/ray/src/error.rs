//! The one error type of the Ray client.

/// What a call to Ray's dashboard can end in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered at the address (refused, no route, DNS), or it stopped answering
    /// within the call's time limit: the cluster is down or the address is wrong.
    #[error("Ray's dashboard at {address} is unreachable: {reason}")]
    Unreachable { address: String, reason: String },
    /// The job (or node) named does not exist on this cluster.
    #[error("{what} does not exist on the Ray cluster at {address}")]
    NotFound { address: String, what: String },
    /// Ray answered with an error status (a refused submission, a server error).
    #[error("Ray's dashboard at {address} answered {status} to {what}: {body}")]
    Refused {
        address: String,
        what: String,
        status: u16,
        body: String,
    },
    /// Ray answered 2xx with a body this client cannot read (another Ray version?).
    #[error("Ray's answer to {what} could not be read: {reason}")]
    Decode { what: String, reason: String },
    /// The configuration given to the client is unusable (an address that is no URL, a
    /// header that is no header).
    #[error("invalid Ray client setting: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
