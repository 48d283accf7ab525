//! The fake streamer (`/ws`), as the Schwab Trader API Streamer Guide
//! describes it: `{"requests":[…]}` in; `response`, `data` and `notify`
//! frames out. LOGIN first (code 3 and a closed socket on a bad token),
//! one connection per user (a newer LOGIN closes the older socket with
//! code 12), LEVELONE_EQUITIES with sizes in lots of 100, ACCT_ACTIVITY
//! with the order events, a heartbeat `notify`.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::fixtures::STREAMER;
use super::{number, Shared, StreamPush};

/// Response codes of the guide's section 1.4.
const SUCCESS: i64 = 0;
const LOGIN_DENIED: i64 = 3;
const SERVICE_NOT_AVAILABLE: i64 = 11;
const CLOSE_CONNECTION: i64 = 12;
const STREAM_CONN_NOT_FOUND: i64 = 20;
const BAD_COMMAND_FORMAT: i64 = 21;

pub(super) async fn upgrade(State(fake): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| Session::new(fake).run(socket))
}

/// One streamer socket.
struct Session {
    fake: Arc<Shared>,
    id: u64,
    logged_in: bool,
    correl_id: String,
    quote_keys: Vec<String>,
    /// The LEVELONE_EQUITIES fields asked for (all when empty).
    quote_fields: Vec<String>,
    /// ACCT_ACTIVITY's key, once subscribed.
    activity_key: Option<String>,
    activity_seq: u64,
}

/// What the session does after handling an input.
enum Next {
    Send(Vec<Value>),
    /// Send these frames, then close the socket.
    Close(Vec<Value>),
}

impl Session {
    fn new(fake: Arc<Shared>) -> Self {
        let id = {
            let mut s = fake.lock();
            s.next_stream_session += 1;
            s.next_stream_session
        };
        Self {
            fake,
            id,
            logged_in: false,
            correl_id: String::new(),
            quote_keys: Vec::new(),
            quote_fields: Vec::new(),
            activity_key: None,
            activity_seq: 0,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let mut pushes = self.fake.stream.subscribe();
        let every = self.fake.lock().rules.heartbeat_every;
        let mut heartbeat = tokio::time::interval(every);
        loop {
            let next = tokio::select! {
                _ = heartbeat.tick() => Next::Send(vec![heartbeat_frame()]),
                push = pushes.recv() => match push {
                    Ok(push) => self.on_push(push),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                },
            };
            let (frames, close) = match next {
                Next::Send(frames) => (frames, false),
                Next::Close(frames) => (frames, true),
            };
            for frame in frames {
                if socket.send(Message::text(frame.to_string())).await.is_err() {
                    return;
                }
            }
            if close {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }

    fn on_push(&mut self, push: StreamPush) -> Next {
        match push {
            StreamPush::Drop => Next::Close(Vec::new()),
            StreamPush::LoggedIn { keep } if self.logged_in && keep != self.id => {
                let msg = STREAMER.text("close_connection_msg");
                Next::Close(vec![self.response("ADMIN", "LOGIN", "0", CLOSE_CONNECTION, &msg)])
            }
            StreamPush::Quote(symbol) if self.logged_in && self.quote_keys.contains(&symbol) => {
                Next::Send(self.level_one(&[symbol]).into_iter().collect())
            }
            StreamPush::Activity { account, order_id, kind } if self.logged_in && self.activity_key.is_some() => {
                Next::Send(vec![self.activity(&account, order_id, kind)])
            }
            _ => Next::Send(Vec::new()),
        }
    }

    fn on_text(&mut self, text: &str) -> Next {
        let requests = serde_json::from_str::<Value>(text).ok().and_then(|v| v.get("requests").cloned());
        let requests = match requests {
            Some(Value::Array(list)) => list,
            Some(one @ Value::Object(_)) => vec![one],
            _ => {
                let msg = STREAMER.text("bad_command_msg");
                return Next::Send(vec![self.response("ADMIN", "UNKNOWN", "-1", BAD_COMMAND_FORMAT, &msg)]);
            }
        };
        let mut out = Vec::new();
        for r in requests {
            match self.on_request(&r) {
                Next::Send(frames) => out.extend(frames),
                Next::Close(frames) => {
                    out.extend(frames);
                    return Next::Close(out);
                }
            }
        }
        Next::Send(out)
    }

    fn on_request(&mut self, r: &Value) -> Next {
        let service = r["service"].as_str().unwrap_or_default().to_string();
        let command = r["command"].as_str().unwrap_or_default().to_string();
        let requestid = match &r["requestid"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let param = |k: &str| r["parameters"][k].as_str().map(str::to_string);
        let reply = |this: &Self, code: i64, msg: &str| this.response(&service, &command, &requestid, code, msg);
        if service.is_empty() || command.is_empty() || requestid.is_empty() {
            return Next::Send(vec![reply(self, BAD_COMMAND_FORMAT, &STREAMER.text("bad_command_msg"))]);
        }
        let info = self.fake.streamer_info();
        let ids_match = r["SchwabClientCustomerId"] == info["schwabClientCustomerId"];
        match (service.as_str(), command.as_str()) {
            ("ADMIN", "LOGIN") => {
                self.correl_id = r["SchwabClientCorrelId"].as_str().unwrap_or_default().to_string();
                let token_live = param("Authorization").is_some_and(|t| {
                    let s = self.fake.lock();
                    let now = s.now();
                    s.access_tokens.get(&t).is_some_and(|expires| now < *expires)
                });
                let ok = token_live
                    && ids_match
                    && param("SchwabClientChannel").as_ref()
                        == info["schwabClientChannel"].as_str().map(String::from).as_ref()
                    && param("SchwabClientFunctionId").as_ref()
                        == info["schwabClientFunctionId"].as_str().map(String::from).as_ref();
                if !ok {
                    // Connection severed (guide 1.4): the client logs in again with a new token.
                    return Next::Close(vec![reply(self, LOGIN_DENIED, &STREAMER.text("login_denied_msg"))]);
                }
                self.logged_in = true;
                self.fake.lock().stream_logins += 1;
                let _ = self.fake.stream.send(StreamPush::LoggedIn { keep: self.id });
                let msg = STREAMER.get("response")["response"][0]["content"]["msg"].clone();
                Next::Send(vec![reply(self, SUCCESS, msg.as_str().unwrap_or_default())])
            }
            _ if !self.logged_in || !ids_match => {
                Next::Send(vec![reply(self, STREAM_CONN_NOT_FOUND, &STREAMER.text("not_logged_in_msg"))])
            }
            ("ADMIN", "LOGOUT") => Next::Close(vec![reply(self, SUCCESS, &STREAMER.text("logout_ok_msg"))]),
            ("LEVELONE_EQUITIES", "SUBS" | "ADD" | "UNSUBS" | "VIEW") => {
                let keys: Vec<String> = param("keys")
                    .unwrap_or_default()
                    .split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect();
                if let Some(fields) = param("fields") {
                    self.quote_fields = fields.split(',').map(|f| f.trim().to_string()).collect();
                }
                match command.as_str() {
                    "SUBS" => self.quote_keys = keys.clone(),
                    "ADD" => self
                        .quote_keys
                        .extend(keys.iter().filter(|k| !self.quote_keys.contains(k)).cloned().collect::<Vec<_>>()),
                    "UNSUBS" => self.quote_keys.retain(|k| !keys.contains(k)),
                    _ => {}
                }
                let msg = format!("{} command succeeded", command);
                let mut frames = vec![reply(self, SUCCESS, &msg)];
                if matches!(command.as_str(), "SUBS" | "ADD") {
                    frames.extend(self.level_one(&keys));
                }
                Next::Send(frames)
            }
            ("ACCT_ACTIVITY", "SUBS") => {
                // Only the first key is used (guide 7.1).
                let key = param("keys").unwrap_or_default().split(',').next().unwrap_or_default().to_string();
                self.activity_key = Some(key.clone());
                let mut entry = STREAMER.get("acct_activity_subscribed");
                entry["key"] = json!(key);
                Next::Send(vec![
                    reply(self, SUCCESS, &STREAMER.text("subs_ok_msg")),
                    data("ACCT_ACTIVITY", vec![entry]),
                ])
            }
            ("ACCT_ACTIVITY", "UNSUBS") => {
                self.activity_key = None;
                Next::Send(vec![reply(self, SUCCESS, "UNSUBS command succeeded")])
            }
            _ => Next::Send(vec![reply(self, SERVICE_NOT_AVAILABLE, &STREAMER.text("service_not_available_msg"))]),
        }
    }

    fn response(&self, service: &str, command: &str, requestid: &str, code: i64, msg: &str) -> Value {
        let mut frame = STREAMER.get("response");
        let r = &mut frame["response"][0];
        r["service"] = json!(service);
        r["command"] = json!(command);
        r["requestid"] = json!(requestid);
        r["SchwabClientCorrelId"] = json!(self.correl_id);
        r["timestamp"] = json!(Utc::now().timestamp_millis());
        r["content"] = json!({"code": code, "msg": msg});
        frame
    }

    /// A LEVELONE_EQUITIES data frame for `keys` the fake knows, with the
    /// fields asked for; sizes (4, 5) in lots of 100 unless switched off.
    fn level_one(&self, keys: &[String]) -> Option<Value> {
        let s = self.fake.lock();
        let lots = s.rules.level_one_sizes_in_lots;
        let size = |shares: Decimal| if lots { (shares / Decimal::ONE_HUNDRED).trunc() } else { shares };
        let now = Utc::now().timestamp_millis();
        let content: Vec<Value> = keys
            .iter()
            .filter_map(|k| s.quotes.get(k).map(|q| (k, q)))
            .map(|(k, q)| {
                let template = STREAMER.get("level_one_entry");
                let mut entry = serde_json::Map::new();
                let values = [
                    ("1", number(q.bid)),
                    ("2", number(q.ask)),
                    ("3", number(q.last)),
                    ("4", number(size(q.bid_size))),
                    ("5", number(size(q.ask_size))),
                    ("34", json!(now)),
                    ("35", json!(now)),
                ];
                for (field, value) in template.as_object().into_iter().flatten() {
                    let asked = self.quote_fields.is_empty() || self.quote_fields.iter().any(|f| f == field);
                    if field == "key" || field == "delayed" || !asked {
                        continue;
                    }
                    let v = values.iter().find(|(f, _)| f == field).map(|(_, v)| v.clone()).unwrap_or(value.clone());
                    entry.insert(field.clone(), v);
                }
                entry.insert("key".into(), json!(k));
                entry.insert("delayed".into(), json!(false));
                Value::Object(entry)
            })
            .collect();
        (!content.is_empty()).then(|| data("LEVELONE_EQUITIES", content))
    }

    fn activity(&mut self, account: &str, order_id: i64, kind: &str) -> Value {
        self.activity_seq += 1;
        let mut message = STREAMER.get("acct_activity_data");
        message["SchwabOrderID"] = json!(order_id.to_string());
        message["AccountNumber"] = json!(account);
        message["BaseEvent"]["EventType"] = json!(kind);
        let mut entry = STREAMER.get("acct_activity_entry");
        entry["seq"] = json!(self.activity_seq);
        entry["key"] = json!(self.activity_key.clone().unwrap_or_default());
        entry["1"] = json!(account);
        entry["2"] = json!(kind);
        entry["3"] = json!(message.to_string());
        data("ACCT_ACTIVITY", vec![entry])
    }
}

fn data(service: &str, content: Vec<Value>) -> Value {
    let mut frame = STREAMER.get("data");
    let d = &mut frame["data"][0];
    d["service"] = json!(service);
    d["timestamp"] = json!(Utc::now().timestamp_millis());
    d["command"] = json!("SUBS");
    d["content"] = json!(content);
    frame
}

fn heartbeat_frame() -> Value {
    let mut frame = STREAMER.get("heartbeat");
    frame["notify"][0]["heartbeat"] = json!(Utc::now().timestamp_millis().to_string());
    frame
}
