//! Users' credentials: password hashing and signed login tokens.
//!
//! Ownership and grants are catalog state and are checked in
//! `broker::access`; this module only proves who a caller is.

pub mod password;
pub mod token;

pub use password::PasswordHash;
pub use token::{Claims, TokenError, TokenIssuer};
