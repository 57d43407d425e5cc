//! A standing problem of this controller, told with every answer: an
//! `x-dimmer-warning` header the CLI prints, so that whoever talks to a
//! controller that writes nothing learns why from any command.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;

use crate::service::Service;

pub const HEADER: &str = "x-dimmer-warning";

pub(super) async fn add(State(service): State<Arc<Service>>, mut resp: Response) -> Response {
    if let Some(why) = service.key_problem() {
        if let Ok(v) = HeaderValue::from_str(&format!("this controller: {why}")) {
            resp.headers_mut().insert(HEADER, v);
        }
    }
    resp
}
