//! `POST /v1/users`, `GET /v1/users/by-name/{username}`, `GET /v1/users/{uid}`,
//! `GET /v1/users?ids=…`, `GET /v1/users/{uid}/presence`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use ringchat_cluster::UserRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Auth, JsonBody};
use crate::app::AppState;
use crate::error::ApiError;
use crate::validate::MAX_ID_BYTES;

/// Most ids one `GET /v1/users?ids=…` may ask for (PROTOCOL v1.1).
pub const MAX_LOOKUP_IDS: usize = 100;

/// Lookups of one batch in flight at once: the ids hash to different partitions (often led by
/// other nodes), so asking one after another would cost a round trip per id, while asking all
/// hundred at once would let one request crowd the routers.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// The wire object `{user_id, username}`.
fn user_json(user: &UserRecord) -> Value {
    json!({"user_id": user.user_id, "username": user.username})
}

/// A user by id, wherever its partition lives (`Cluster::get_user` reads at the partition's
/// leader, forwarding to another node when needed). An id no user can have is simply unknown.
async fn lookup(app: &AppState, user_id: &str) -> Result<Option<UserRecord>, ApiError> {
    if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
        return Ok(None);
    }
    Ok(app.chat.cluster.get_user(user_id).await?)
}

/// Sign-up body.
#[derive(Deserialize)]
pub struct SignupBody {
    username: String,
    password: String,
}

/// 201 `{user_id, username}`; 409 if taken; 429 beyond the source address's sign-ups.
pub async fn signup(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<SignupBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.limits.signup(peer.ip())?;
    let user = app.chat.signup(&b.username, &b.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": user.user_id, "username": user.username})),
    ))
}

/// 200 `{user_id, username}`.
pub async fn by_name(
    State(app): State<Arc<AppState>>,
    _auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = app.chat.user_by_name(&name).await?;
    Ok(Json(user_json(&user)))
}

/// `GET /v1/users/{uid}`: 200 `{user_id, username}`; 404 `not_found` for an unknown id.
pub async fn by_id(
    State(app): State<Arc<AppState>>,
    _auth: Auth,
    Path(uid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match lookup(&app, &uid).await? {
        Some(user) => Ok(Json(user_json(&user))),
        None => Err(ApiError::not_found("no such user")),
    }
}

/// The ids of `?ids=a,b,…`, in the order given, each once. The value is percent-decoded before
/// it is split, so `ids=a%2Cb` (what a browser's `URLSearchParams` sends) means two ids too;
/// `ids` given more than once adds up. More than `MAX_LOOKUP_IDS` → `invalid`.
fn requested_ids(params: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut asked = 0usize;
    let mut given = false;
    for (key, value) in params {
        if key != "ids" {
            return Err(ApiError::invalid(format!("unknown query parameter {key}")));
        }
        given = true;
        for id in value.split(',').filter(|id| !id.is_empty()) {
            asked += 1;
            if asked > MAX_LOOKUP_IDS {
                return Err(ApiError::invalid(format!("at most {MAX_LOOKUP_IDS} ids per lookup")));
            }
            if seen.insert(id) {
                ids.push(id.to_string());
            }
        }
    }
    if !given {
        return Err(ApiError::invalid("ids is required: GET /v1/users?ids=a,b,…"));
    }
    Ok(ids)
}

/// `GET /v1/users?ids=a,b,…`: 200 `{users:[{user_id, username}…]}` in the order asked, unknown
/// ids left out; more than 100 ids → 400 `invalid`.
pub async fn by_ids(
    State(app): State<Arc<AppState>>,
    _auth: Auth,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let ids = requested_ids(&params)?;
    let lookups = ids.into_iter().map(|id| {
        let app = Arc::clone(&app);
        async move { lookup(&app, &id).await }
    });
    let found: Vec<Option<UserRecord>> = stream::iter(lookups).buffered(LOOKUPS_IN_FLIGHT).try_collect().await?;
    let users: Vec<Value> = found.iter().flatten().map(user_json).collect();
    Ok(Json(json!({ "users": users })))
}

/// 200 `{user_id, status, last_seen}`; 403 unless a channel is shared.
pub async fn presence(
    State(app): State<Arc<AppState>>,
    Auth(auth): Auth,
    Path(uid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app.chat.presence(&auth, &uid).await?.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ids_keep_their_order_and_come_once() {
        let ids = requested_ids(&params(&[("ids", "b,a,,b"), ("ids", "c")])).unwrap();
        assert_eq!(ids, ["b", "a", "c"]);
    }

    #[test]
    fn a_hundred_ids_pass_and_one_more_is_invalid() {
        let hundred: Vec<String> = (0..MAX_LOOKUP_IDS).map(|i| format!("u_{i}")).collect();
        assert_eq!(
            requested_ids(&params(&[("ids", &hundred.join(","))])).unwrap().len(),
            100
        );
        let more = format!("{},u_x", hundred.join(","));
        let err = requested_ids(&params(&[("ids", &more)])).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Invalid);
    }

    #[test]
    fn a_missing_ids_or_an_unknown_parameter_is_invalid() {
        assert!(requested_ids(&params(&[])).is_err());
        assert!(requested_ids(&params(&[("ids", "a"), ("limit", "3")])).is_err());
        assert!(requested_ids(&params(&[("ids", "")])).unwrap().is_empty());
    }
}
