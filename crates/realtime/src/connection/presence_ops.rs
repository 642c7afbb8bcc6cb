//! Session handling of PRESENCE: checks and stamping, and what happens to a
//! connection's members when its transport ends.

use std::sync::Arc;
use std::time::Duration;

use super::Session;
use crate::auth::now_ms;
use crate::capability::ops;
use crate::error::{AblyError, ErrorCode};
use crate::hub::validate_channel_name;
use crate::protocol::ProtocolMessage;

impl Session {
    /// Presence when the transport ends: members leave now after CLOSE or a fatal
    /// error; after a transport loss they wait `presence_leave_grace_ms` for a resume.
    /// A superseded transport leaves them to its successor.
    pub(super) fn end_presence(&self, superseded: bool) {
        if superseded {
            return;
        }
        let id = self.conn.connection_id.clone();
        if !self.resumable {
            let channels = self.link.take_presence_channels();
            self.hub.remove_presence(&id, &channels);
            return;
        }
        let grace = Duration::from_millis(self.hub.config().presence_leave_grace_ms);
        let hub = Arc::downgrade(&self.hub);
        let link = self.link.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(hub) = hub.upgrade() else { return };
            if hub.is_connection_live(&id) {
                return;
            }
            let channels = link.take_presence_channels();
            hub.end_presence_grace(&id, &channels).await;
            // Gone from this node either way: a resume here re-enters them.
            link.mark_presence_lost(&channels);
        });
    }

    pub(super) fn on_presence(&mut self, pm: ProtocolMessage) {
        let Some(serial) = self.take_msg_serial(&pm) else {
            return;
        };
        match self.stamp_presence(pm, serial) {
            Ok(None) => self.ack(serial),
            Ok(Some((channel, msgs))) => {
                match self.hub.presence(&channel, msgs, &self.conn.connection_id) {
                    Ok(()) => {
                        self.link.note_presence(&channel);
                        self.ack(serial);
                    }
                    Err(e) => self.nack(serial, &e),
                }
            }
            Err(e) => self.nack(serial, &e),
        }
    }

    /// Checks a PRESENCE publish and fills in ids (`connectionId:msgSerial:index`,
    /// which clients parse to order presence), clientId, connectionId and timestamp.
    #[allow(clippy::type_complexity)]
    pub(super) fn stamp_presence(
        &mut self,
        pm: ProtocolMessage,
        serial: i64,
    ) -> Result<Option<(String, Vec<crate::protocol::PresenceMessage>)>, AblyError> {
        use crate::presence::actions;
        let Some(channel) = pm.channel else {
            return Err(AblyError::new(
                ErrorCode::BadRequest,
                "PRESENCE without channel",
            ));
        };
        validate_channel_name(&channel)?;
        let Some(mut msgs) = pm.presence.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        if !self.principal.capability.allows(&channel, ops::PRESENCE) {
            return Err(AblyError::new(
                ErrorCode::CapabilityDenied,
                format!("Unable to enter presence (permission denied); channel = {channel}"),
            ));
        }
        self.check_mode(&channel, crate::protocol::flags::PRESENCE, "enter presence")?;
        let now = now_ms();
        let mut size = 0;
        for (i, m) in msgs.iter_mut().enumerate() {
            if !matches!(
                m.action,
                Some(actions::ENTER | actions::LEAVE | actions::UPDATE | actions::PRESENT)
            ) {
                return Err(AblyError::new(
                    ErrorCode::BadRequest,
                    format!("Invalid presence action {:?}", m.action),
                ));
            }
            let cid = m.client_id.clone().or_else(|| self.client_id.clone());
            let Some(cid) = cid else {
                return Err(AblyError::of(ErrorCode::PresenceNoClientId));
            };
            let permitted = match self.client_id.as_deref() {
                Some(own) => own == cid || self.principal.client_id.as_deref() == Some("*"),
                None => self.principal.may_use_client_id(Some(&cid)),
            };
            if !permitted {
                return Err(AblyError::new(
                    ErrorCode::InvalidClientId,
                    format!("Mismatched clientId {cid:?} for this connection"),
                ));
            }
            m.client_id = Some(cid);
            m.connection_id = Some(self.conn.connection_id.clone());
            m.id = Some(format!("{}:{}:{}", self.conn.connection_id, serial, i));
            m.timestamp = Some(now);
            size += m
                .data
                .as_ref()
                .map_or(0, crate::protocol::MessageData::size)
                + m.client_id.as_ref().map_or(0, String::len);
        }
        let max = self.hub.config().max_message_size;
        if size > max {
            return Err(AblyError::new(
                ErrorCode::MessageTooLarge,
                format!("Presence data too large (was {size} bytes; limit is {max} bytes)"),
            ));
        }
        if !self.bucket.take(msgs.len()) {
            return Err(AblyError::new(
                ErrorCode::RateLimited,
                "Rate limit exceeded; request rejected (max inbound rate per connection)",
            ));
        }
        Ok(Some((channel, msgs)))
    }
}
