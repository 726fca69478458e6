//! `netd monitor` (`GET /events`): what happens to netd's objects as it happens, the way
//! `docker events` shows Docker's: sandboxes (Docker's type `container`: create, start, kill,
//! die, stop, destroy), networks (create, destroy, connect, disconnect) and published ports
//! (netd's own type `port`: publish, unpublish). Each event has Docker's JSON shape (`Type`,
//! `Action`, `Actor.ID`, `Actor.Attributes`, `scope`, `time`, `timeNano`) and prints as Docker's
//! text line (`2024-01-02T03:04:05.000000000Z container start ID (name=web)`).
//!
//! Nothing is kept: a subscriber sees the events from its subscription on; with nobody
//! listening, emitting one is a check of the receiver count.
use std::collections::BTreeMap;

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Event {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// Docker's text form (`docker events` without `--format`): the time with nanoseconds,
    /// type, action, actor id, then the attributes sorted by key in parentheses.
    pub fn text(&self) -> String {
        let t = crate::model::rfc3339(
            self.time_nano.div_euclid(1_000_000_000),
            self.time_nano.rem_euclid(1_000_000_000) as u32,
        );
        let mut s = format!("{t} {} {} {}", self.typ, self.action, self.actor.id);
        if !self.actor.attributes.is_empty() {
            let attrs: Vec<String> = self.actor.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", attrs.join(", ")));
        }
        s
    }
}

/// The daemon's event bus.
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self { tx: broadcast::channel(4096).0 }
    }
}

impl Events {
    pub fn emit(&self, typ: &str, action: &str, id: &str, attrs: &[(&str, String)]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let now = jiff::Timestamp::now();
        let nanos = now.as_nanosecond() as i64;
        let _ = self.tx.send(Event {
            typ: typ.to_string(),
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            },
            scope: "local".into(),
            time: now.as_second(),
            time_nano: nanos,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// `port` events' actor: `HOSTIP:HOSTPORT/PROTO` (`[::]:8080/tcp` for v6).
pub fn port_id(m: &crate::dataplane::PortMapping) -> String {
    format!("{}/{}", crate::ports::format_host_addr(&m.host_ip.to_string(), &m.host_port.to_string()), m.proto.as_str())
}

/// `docker events --filter type=X`-style filters from the query (`type`, `event`/`action`).
pub fn matches(e: &Event, typ: Option<&str>, action: Option<&str>) -> bool {
    typ.is_none_or(|t| t.split(',').any(|t| t == e.typ)) && action.is_none_or(|a| a.split(',').any(|a| a == e.action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_line_is_dockers() {
        let e = Event {
            typ: "container".into(),
            action: "die".into(),
            actor: Actor {
                id: "abc".into(),
                attributes: [("name".to_string(), "web".to_string()), ("exitCode".into(), "0".into())].into(),
            },
            scope: "local".into(),
            time: 1_700_000_000,
            time_nano: 1_700_000_000_000_000_123,
        };
        assert_eq!(e.text(), "2023-11-14T22:13:20.000000123Z container die abc (exitCode=0, name=web)");
        let bare = Event { actor: Actor { id: "n1".into(), attributes: BTreeMap::new() }, ..e.clone() };
        assert_eq!(bare.text(), "2023-11-14T22:13:20.000000123Z container die n1");
        assert!(matches(&e, Some("network,container"), None));
        assert!(!matches(&e, Some("network"), None));
        assert!(!matches(&e, None, Some("start")));
    }
}
