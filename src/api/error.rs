//! The one mapping from errors to HTTP: a status and the JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::broker::BrokerError;

/// An error response of the REST API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// Human-readable description of the failure and of what to do next.
    pub message: String,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// A 400 `invalid_argument` error about `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: format!("invalid {field}: {message}"),
        }
    }

    /// A 401 error.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthenticated",
            message: message.into(),
        }
    }

    /// The JSON response for this error.
    pub fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<BrokerError> for ApiError {
    fn from(err: BrokerError) -> Self {
        let (status, code) = match &err {
            BrokerError::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "invalid_argument"),
            BrokerError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            BrokerError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            BrokerError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            BrokerError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            BrokerError::OutOfOrderSequence(_) => (StatusCode::CONFLICT, "out_of_order_sequence"),
            BrokerError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BrokerError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            BrokerError::OffsetOutOfRange { .. } => {
                (StatusCode::BAD_REQUEST, "offset_out_of_range")
            }
            BrokerError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            BrokerError::CorruptData { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"),
            BrokerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BrokerError::Storage(_) | BrokerError::Internal(_) => {
                // The details name files and internals of the server: they
                // go to the log, and the client gets a pointer to it.
                tracing::error!(error = %err, "request failed");
                return ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "internal",
                    message: "internal error; the broker's log has the details".into(),
                };
            }
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
        }
    }
}

/// Maps any rejection left after routing to a JSON error.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let error = if let Some(error) = rejection.find::<ApiError>() {
        error.clone()
    } else if rejection.is_not_found() {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "no such route; see GET /v1/openapi.json".into(),
        }
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: "request body is larger than the configured max_request_bytes".into(),
        }
    } else if let Some(missing) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::invalid(
            missing.name(),
            "missing header; stream routes need a WebSocket upgrade request",
        )
    } else if let Some(invalid) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::invalid(
            invalid.name(),
            "invalid header value; stream routes need a WebSocket upgrade request",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: "method not allowed on this route; see GET /v1/openapi.json".into(),
        }
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "request body must be JSON (Content-Type: application/json)".into(),
        }
    } else {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: "the request could not be parsed; see GET /v1/openapi.json".into(),
        }
    };
    Ok(error.into_response())
}
