//! The layers of the registry listeners' [`tower`] stack, one file each,
//! outermost first (the stack itself is [`super::App::service`]):
//!
//! - [`api_version`]: `Docker-Distribution-Api-Version: registry/2.0` on every
//!   answer that lacks it (tower-http's `SetResponseHeaderLayer`);
//! - [`access_log`]: the client behind trusted proxies, the access-log record
//!   and request metrics, the idle timeout on the request body;
//! - [`answer_errors`]: errors become responses, once;
//! - [`head_limits`]: oversized request heads get 431;
//! - [`route`]: the path parsed once into a [`crate::route::Route`] in the
//!   request's extensions, or the token endpoint (`/auth/token`);
//! - [`authorize`]: the [`crate::auth::Caller`] in the extensions, client
//!   credentials and refused mounts stripped, the filtered catalog;
//! - [`write_gate`]: writes wait or are refused while GC runs;
//! - [`endpoints`]: the innermost service, `App::endpoints`.
//!
//! The layers from [`head_limits`] to [`write_gate`] (and the admin
//! listener's `require_admin`) are each a [`stage::Stage`]: an async
//! function of the request and the services below it.
//!
//! What a layer passes inward travels in the request's extensions:
//! [`super::ConnInfo`] (set by the listener, replaced by the access-log layer
//! when a trusted proxy names the client), the [`crate::access_log::RequestRecord`],
//! the `Route` and the `Caller`. Below [`answer_errors`] every service fails with
//! a [`RegistryError`]; nothing but that one function turns it into a response.

use std::future::Future;
use std::pin::Pin;

use http::{Request, Response, StatusCode};

use super::ConnInfo;
use crate::body::ProxyBody;
use crate::error::{ErrorCode, RegistryError};

pub mod access_log;
pub mod answer_errors;
pub mod api_version;
pub mod authorize;
pub mod endpoints;
pub mod head_limits;
pub mod route;
pub mod stage;
pub mod write_gate;

#[cfg(test)]
pub(crate) mod test_app;

/// What a service below [`answer_errors`] answers.
pub type Answer = Result<Response<ProxyBody>, RegistryError>;

/// The boxed future of a layer's service.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A value an outer layer put in the request's extensions; its absence is a
/// stack built in the wrong order (500, never a panic).
pub(crate) fn extension<T, B>(req: &Request<B>) -> Result<T, RegistryError>
where
    T: Clone + Send + Sync + 'static,
{
    req.extensions().get::<T>().cloned().ok_or_else(|| {
        RegistryError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            format!(
                "the request pipeline lost its {}",
                std::any::type_name::<T>()
            ),
        )
    })
}

/// The connection a request came on (after trusted proxies).
pub(crate) fn conn_of<B>(req: &Request<B>) -> Result<ConnInfo, RegistryError> {
    extension::<ConnInfo, B>(req)
}
