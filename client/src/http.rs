//! `HttpClient`: the REST calls of PROTOCOL §2, typed, plus `raw` for anything else.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::ClientError;
use crate::tls::Trust;
use crate::types::{ChannelSummary, HistoryPage, Presence, SentMessage, Session, UserInfo};

/// An HTTP client for one node, optionally carrying a bearer token. Cheap to clone (the
/// connection pool is shared).
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    token: Option<String>,
    inner: reqwest::Client,
}

impl HttpClient {
    /// A client for the node at `base` (`http://127.0.0.1:7070`), without a token. An
    /// `https://` base is reached over TLS trusting the system's roots (a node of a private
    /// CA: `with_trust`).
    pub fn new(base: &str) -> HttpClient {
        let trust = if crate::tls::is_tls(base) {
            Trust::system().ok()
        } else {
            None
        };
        Self::build(base, trust.as_ref())
    }

    /// A client for the node at `base` whose TLS certificate `trust` accepts (a private CA).
    pub fn with_trust(base: &str, trust: &Trust) -> HttpClient {
        Self::build(base, Some(trust))
    }

    fn build(base: &str, trust: Option<&Trust>) -> HttpClient {
        let builder = reqwest::Client::builder();
        let builder = match trust {
            Some(trust) => builder.use_preconfigured_tls((*trust.config()).clone()),
            None => builder,
        };
        HttpClient {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            // Building fails only for a TLS setup reqwest cannot use; the default client
            // (reqwest's own roots: none here) then answers an `https://` call with an error.
            inner: builder.build().unwrap_or_default(),
        }
    }

    /// The same client, authenticated with `token`.
    pub fn with_token(&self, token: &str) -> HttpClient {
        HttpClient {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/users`.
    pub async fn signup(&self, username: &str, password: &str) -> Result<UserInfo, ClientError> {
        let body = json!({"username": username, "password": password});
        self.call(Method::POST, "/v1/users", Some(body)).await.map(|(_, v)| v)
    }

    /// `POST /v1/sessions`: a new device unless `device_id` names one of the user's devices.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
        device_id: Option<&str>,
    ) -> Result<Session, ClientError> {
        let mut body = json!({"username": username, "password": password});
        if let Some(n) = device_name {
            body["device_name"] = json!(n);
        }
        if let Some(d) = device_id {
            body["device_id"] = json!(d);
        }
        self.call(Method::POST, "/v1/sessions", Some(body))
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /v1/sessions/current`.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, "/v1/sessions/current", None).await
    }

    /// `GET /v1/users/by-name/{username}`.
    pub async fn user_by_name(&self, username: &str) -> Result<UserInfo, ClientError> {
        let path = format!("/v1/users/by-name/{}", segment(username));
        self.call(Method::GET, &path, None).await.map(|(_, v)| v)
    }

    /// `GET /v1/users/{user_id}` (v1.1): the user's name.
    pub async fn user(&self, user_id: &str) -> Result<UserInfo, ClientError> {
        let path = format!("/v1/users/{}", segment(user_id));
        self.call(Method::GET, &path, None).await.map(|(_, v)| v)
    }

    /// `GET /v1/users?ids=…` (v1.1): the names of up to 100 users in one call; unknown ids are
    /// left out of the answer.
    pub async fn users(&self, user_ids: &[&str]) -> Result<Vec<UserInfo>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Users {
            users: Vec<UserInfo>,
        }
        let ids: Vec<String> = user_ids.iter().map(|id| segment(id)).collect();
        let path = format!("/v1/users?ids={}", ids.join(","));
        let (_, list): (_, Users) = self.call(Method::GET, &path, None).await?;
        Ok(list.users)
    }

    /// `POST /v1/dms`: the one DM channel with `user_id`.
    pub async fn open_dm(&self, user_id: &str) -> Result<ChannelSummary, ClientError> {
        let body = json!({"user_id": user_id});
        self.call(Method::POST, "/v1/dms", Some(body)).await.map(|(_, v)| v)
    }

    /// `POST /v1/groups`.
    pub async fn create_group(&self, name: &str, members: &[String]) -> Result<ChannelSummary, ClientError> {
        let body = json!({"name": name, "members": members});
        self.call(Method::POST, "/v1/groups", Some(body)).await.map(|(_, v)| v)
    }

    /// `POST /v1/channels/{cid}/members`.
    pub async fn add_member(&self, channel_id: &str, user_id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/channels/{}/members", segment(channel_id));
        self.call_empty(Method::POST, &path, Some(json!({"user_id": user_id})))
            .await
    }

    /// `DELETE /v1/channels/{cid}/members/{uid}`.
    pub async fn remove_member(&self, channel_id: &str, user_id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/channels/{}/members/{}", segment(channel_id), segment(user_id));
        self.call_empty(Method::DELETE, &path, None).await
    }

    /// `GET /v1/channels`.
    pub async fn channels(&self) -> Result<Vec<ChannelSummary>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Channels {
            channels: Vec<ChannelSummary>,
        }
        let (_, list): (_, Channels) = self.call(Method::GET, "/v1/channels", None).await?;
        Ok(list.channels)
    }

    /// `POST /v1/channels/{cid}/messages`; returns the status (201 new, 200 a retry) and where
    /// the message landed.
    pub async fn send_message(
        &self,
        channel_id: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Result<(u16, SentMessage), ClientError> {
        let path = format!("/v1/channels/{}/messages", segment(channel_id));
        let body = json!({"text": text, "client_msg_id": client_msg_id});
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `GET /v1/channels/{cid}/messages?before=&after=&limit=`.
    pub async fn history(
        &self,
        channel_id: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        let mut query = Vec::new();
        if let Some(b) = before {
            query.push(format!("before={b}"));
        }
        if let Some(a) = after {
            query.push(format!("after={a}"));
        }
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        let mut path = format!("/v1/channels/{}/messages", segment(channel_id));
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.call(Method::GET, &path, None).await.map(|(_, v)| v)
    }

    /// `GET /v1/users/{uid}/presence`.
    pub async fn presence(&self, user_id: &str) -> Result<Presence, ClientError> {
        let path = format!("/v1/users/{}/presence", segment(user_id));
        self.call(Method::GET, &path, None).await.map(|(_, v)| v)
    }

    /// `PUT /v1/devices/current/push`.
    pub async fn register_push(&self, platform: &str, token: &str) -> Result<(), ClientError> {
        let body = json!({"platform": platform, "token": token});
        self.call_empty(Method::PUT, "/v1/devices/current/push", Some(body))
            .await
    }

    /// `GET /healthz` status.
    pub async fn healthz(&self) -> Result<u16, ClientError> {
        Ok(self.request(Method::GET, "/healthz").send().await?.status().as_u16())
    }

    /// `GET /readyz` status.
    pub async fn readyz(&self) -> Result<u16, ClientError> {
        Ok(self.request(Method::GET, "/readyz").send().await?.status().as_u16())
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.request(Method::GET, "/metrics").send().await?;
        Ok(resp.text().await?)
    }

    /// Any request with raw bytes; returns the status and the body as JSON (`Null` if the body
    /// is empty or not JSON). For tests of malformed input.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<(u16, Value), ClientError> {
        let mut req = self.request(method, path);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.inner.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<reqwest::Response, ClientError> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp.status(), &resp.bytes().await?))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, T), ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{path}: {e}")))?;
        Ok((status, value))
    }

    async fn call_empty(&self, method: Method, path: &str, body: Option<Value>) -> Result<(), ClientError> {
        self.send(method, path, body).await.map(|_| ())
    }
}

/// Turns an error response into `ClientError::Api`, reading the PROTOCOL error body if present.
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
    let message = match v["error"]["message"].as_str() {
        Some(m) => m.to_string(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    ClientError::Api {
        status: status.as_u16(),
        code,
        message,
    }
}

/// Percent-encodes one path segment (ids are opaque: never trust them to be URL-safe).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
