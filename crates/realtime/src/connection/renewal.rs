//! Session handling of tokens over time: in-band AUTH from the client, and
//! disconnection at expiry (DISCONNECTED 40142, as Ably: the SDK then gets a new
//! token and reconnects, resuming the connection).

use std::time::Duration;

use tokio::time::Instant;

use super::{error_message, Flow, Session};
use crate::auth::now_ms;
use crate::capability::ops;
use crate::channel::{Backlog, Subscriber};
use crate::error::{AblyError, ErrorCode};
use crate::protocol::{flags, Action, ProtocolMessage};

/// Longest timer the session arms (about 24 days); longer tokens re-arm on renewal.
const MAX_TIMER_MS: i64 = 1 << 31;

impl Session {
    /// In-band re-authentication: swap the principal, keep connection and channels.
    pub(super) fn on_auth(&mut self, pm: ProtocolMessage) -> Flow {
        let token = pm.auth.and_then(|a| a.access_token);
        let result = match token {
            None => Err(AblyError::new(
                ErrorCode::NoCredentials,
                "AUTH without accessToken",
            )),
            Some(t) => self.hub.keyring().principal_for_token(&t, now_ms()),
        };
        let principal = match result {
            Ok(p) => p,
            Err(e) => {
                self.push(error_message(&e));
                self.resumable = false;
                return Flow::Close;
            }
        };
        let new_cid = principal.client_id.as_deref().filter(|c| *c != "*");
        if principal.client_id.as_deref() != Some("*") && new_cid != self.client_id.as_deref() {
            let e = AblyError::new(
                ErrorCode::IncompatibleCredentials,
                "New token's clientId does not match the connection's clientId",
            );
            self.push(error_message(&e));
            self.resumable = false;
            return Flow::Close;
        }
        self.principal = principal;
        self.schedule_expiry();
        // Capabilities may have narrowed: re-evaluate every attachment.
        let names: Vec<String> = self.attached.keys().cloned().collect();
        for name in names {
            let requested = self
                .requested_modes
                .get(&name)
                .copied()
                .unwrap_or(flags::MODES);
            let granted = requested & self.allowed_modes(&name);
            if granted == 0 {
                self.attached.remove(&name);
                self.requested_modes.remove(&name);
                self.detach_channel(&name);
                let e = AblyError::new(
                    ErrorCode::CapabilityDenied,
                    format!("Capability no longer permits channel {name}"),
                );
                self.push(ProtocolMessage {
                    action: Action::Detached,
                    channel: Some(name),
                    error: Some(e.to_info()),
                    ..Default::default()
                });
            } else {
                self.attached.insert(name.clone(), granted);
                let sub = Subscriber {
                    conn: self.conn.clone(),
                    receive: granted & flags::SUBSCRIBE != 0,
                    presence: granted & flags::PRESENCE_SUBSCRIBE != 0,
                    echo: self.echo,
                    publish: granted & flags::PUBLISH != 0,
                    occupancy: self.wants_occupancy.contains(&name)
                        && self
                            .principal
                            .capability
                            .allows(&name, ops::CHANNEL_METADATA),
                    delta: self.delta_channels.contains(&name),
                    primed: false,
                    annotations: granted & flags::ANNOTATION_SUBSCRIBE != 0,
                };
                let channel = self.hub.channel(&name);
                channel.attach(sub, Backlog::None, self.hub.history(), now_ms());
                self.hub.occupancy_changed(&channel);
            }
        }
        let connected = self.connected_message();
        self.push(connected);
        Flow::Continue
    }

    /// Arms the expiry timer for the principal's token (none for key auth).
    pub(super) fn schedule_expiry(&mut self) {
        let Some(expires) = self.principal.expires_ms else {
            self.expires_at = None;
            return;
        };
        // Capped so that an absurd expiry cannot overflow `Instant` arithmetic.
        let remaining =
            Duration::from_millis(expires.saturating_sub(now_ms()).clamp(0, MAX_TIMER_MS) as u64);
        self.expires_at = Some(Instant::now() + remaining);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.expires_at
    }

    pub(super) fn on_deadline(&mut self) -> Flow {
        let really_expired = self.principal.expires_ms.is_some_and(|e| e <= now_ms());
        if !really_expired {
            // A capped timer fired early: re-arm from the true expiry.
            self.schedule_expiry();
            return Flow::Continue;
        }
        let e = AblyError::new(ErrorCode::TokenExpired, "Token expired");
        self.push(ProtocolMessage {
            action: Action::Disconnected,
            error: Some(e.to_info()),
            ..Default::default()
        });
        Flow::Close
    }
}
