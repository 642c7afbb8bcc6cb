//! One realtime connection: the session state machine behind a WebSocket.
//!
//! [`run_session`] is generic over a `Sink<Frame>` and a `Stream<Result<Frame, _>>`, so
//! the WebSocket adapter in [`crate::ws`] and unit tests drive the same code. The
//! session authenticates from the connect query, sends CONNECTED, then runs one
//! `select!` loop over: inbound frames, the connection's outbound queue (fan-out from
//! channels), the heartbeat timer and the token-expiry timer. Per-action logic lives
//! in `Session::on_message`, an exhaustive `match` over [`Action`]. Frames that
//! arrive together are handled as a batch so consecutive ACKs collapse into one
//! `ACK{msgSerial, count}`. States and transitions are described in `LIFECYCLE.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::time::{Instant, MissedTickBehavior};

use crate::auth::{now_ms, Principal};
use crate::capability::ops;
use crate::channel::{Backlog, ConnHandle, Origin, Publisher, SharedFrame, Subscriber};
use crate::codec::{check_frame_format, decode_frame, encode_frame, Format, Frame};
use crate::connect::{authenticate, parse_rewind, ConnectParams};
use crate::error::{AblyError, ErrorCode};
use crate::hub::{validate_channel_name, ConnectionRecord, Hub};
use crate::protocol::{
    flags, message_actions, Action, ConnectionDetails, ProtocolMessage, PublishResult,
};
use crate::ratelimit::Bucket;

mod presence_ops;
mod renewal;
use crate::registry::SessionLink;

/// Most messages replayed to a re-attaching channel before continuity is declared
/// lost.
const MAX_RESUME_BACKLOG: usize = 1000;
/// Most frames handled before outbound traffic gets a turn.
const BATCH: usize = 64;
/// Most queued fan-out frames written per flush; bounds the time one connection
/// holds a worker while others wait.
const OUT_BATCH: usize = 256;

/// Longest wait for a peer to take the last frames of a session ending on the
/// server's initiative (DISCONNECTED, close): one that does not read must not keep
/// its session, queue and channel attachments alive.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);
/// Why a subscriber past its output limits is disconnected.
const FELL_BEHIND: &str =
    "Connection disconnected: client not reading fast enough (output buffer limit exceeded)";

/// Whether the session continues after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

enum Outgoing {
    Message(Box<ProtocolMessage>),
    Shared(Arc<SharedFrame>),
    Ping,
}

struct Session {
    hub: Arc<Hub>,
    format: Format,
    heartbeats: bool,
    echo: bool,
    conn: ConnHandle,
    connection_key: String,
    client_id: Option<String>,
    principal: Principal,
    /// Attached channels and their granted mode flags.
    attached: HashMap<String, u64>,
    /// Attached channels whose ATTACH asked for `occupancy` events (kept so a token
    /// renewal re-attaches with the same request).
    wants_occupancy: HashSet<String>,
    /// The modes each attachment asked for: a re-authentication grants them again
    /// against the new capability (an upgrade can add what was refused).
    requested_modes: HashMap<String, u64>,
    /// Attached channels whose ATTACH asked for `delta=vcdiff`.
    delta_channels: HashSet<String>,
    bucket: Bucket,
    /// Shared with the registry so a resumed transport continues the msgSerial
    /// sequence (duplicate detection for publishes re-sent after resume).
    link: SessionLink,
    /// Whether the connection may be resumed when this transport ends: true unless
    /// the client closed it or it failed fatally.
    resumable: bool,
    /// Whether this transport took over an existing connection (resume/recover).
    resumed_connection: bool,
    pending_ack: Option<(i64, u64, Vec<PublishResult>)>,
    out: Vec<Outgoing>,
    expires_at: Option<Instant>,
}

fn random_id(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn error_message(e: &AblyError) -> ProtocolMessage {
    ProtocolMessage {
        action: Action::Error,
        error: Some(e.to_info()),
        ..Default::default()
    }
}

async fn send_frame<S>(sink: &mut S, frame: Frame) -> bool
where
    S: Sink<Frame> + Unpin,
    S::Error: Display,
{
    match sink.send(frame).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "realtime transport write failed");
            false
        }
    }
}

/// Sends a fatal error then closes: used before a session exists.
async fn refuse<S>(sink: &mut S, format: Format, err: &AblyError)
where
    S: Sink<Frame> + Unpin,
    S::Error: Display,
{
    if let Ok(f) = encode_frame(&error_message(err), format) {
        let _ = send_frame(sink, f).await;
    }
    let _ = send_frame(sink, Frame::Close).await;
    let _ = sink.close().await;
}

/// Runs one realtime connection to completion.
pub async fn run_session<S, R, E>(
    hub: Arc<Hub>,
    query: HashMap<String, String>,
    mut sink: S,
    mut stream: R,
) where
    S: Sink<Frame> + Unpin,
    S::Error: Display,
    R: Stream<Item = Result<Frame, E>> + Unpin,
    E: Display,
{
    let params = match ConnectParams::from_query(&query) {
        Ok(p) => p,
        Err(e) => {
            let format = if query.get("format").map(String::as_str) == Some("msgpack") {
                Format::Msgpack
            } else {
                Format::Json
            };
            return refuse(&mut sink, format, &e).await;
        }
    };
    let format = params.format;
    let mut slot = match hub.open_connection() {
        Ok(s) => s,
        Err(e) => return refuse(&mut sink, format, &e).await,
    };
    let (principal, client_id) = match authenticate(&hub, &params) {
        Ok(v) => v,
        Err(e) => return refuse(&mut sink, format, &e).await,
    };
    let fresh = |slot: &mut crate::hub::ConnectionSlot| {
        let connection_id = random_id(10);
        let connection_key = crate::registry::connection_key_for(&connection_id);
        let link = slot.register(ConnectionRecord {
            connection_id: connection_id.clone(),
            connection_key: connection_key.clone(),
            client_id: client_id.clone(),
            key_name: principal.key_name.clone(),
            connected_ms: now_ms(),
            disconnected_ms: None,
        });
        (connection_id, connection_key, link)
    };
    let (connection_id, connection_key, link, resume_error) = match params.resume.as_deref() {
        None => {
            let (id, key, link) = fresh(&mut slot);
            (id, key, link, None)
        }
        // Boxed, as the frame handlers' engine calls are (see `on_message`).
        Some(key) => {
            match Box::pin(slot.resume(key, &principal.key_name, client_id.as_deref())).await {
                Ok((rec, link)) => (rec.connection_id, rec.connection_key, link, None),
                Err(e) => {
                    let (id, key, link) = fresh(&mut slot);
                    (id, key, link, Some(e))
                }
            }
        }
    };
    let superseded = link.superseded.clone();
    let kicked = link.kicked.clone();
    let (tx, rx) =
        crate::outbox::with_limits(hub.config().outbound_queue, hub.config().output_limits());
    let mut s = Session {
        bucket: Bucket::new(hub.config().max_inbound_rate),
        hub: hub.clone(),
        format,
        heartbeats: params.heartbeats,
        echo: params.echo,
        conn: ConnHandle {
            id: slot.id,
            connection_id,
            tx,
        },
        connection_key,
        client_id,
        principal,
        attached: HashMap::new(),
        wants_occupancy: HashSet::new(),
        requested_modes: HashMap::new(),
        delta_channels: HashSet::new(),
        link,
        resumable: true,
        resumed_connection: params.resume.is_some() && resume_error.is_none(),
        pending_ack: None,
        out: Vec::new(),
        expires_at: None,
    };
    s.schedule_expiry();
    let mut connected = s.connected_message();
    connected.error = resume_error.map(|e| e.to_info());
    s.push(connected);

    let idle = Duration::from_millis(hub.config().max_idle_interval_ms.max(100));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + idle, idle);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut superseded_now = false;
    // Both fire at most once and end the session, so one future each serves the
    // whole loop (re-creating them per wake-up costs two waiter-list locks per
    // delivered message).
    let superseded_fut = superseded.notified();
    let evicted_fut = rx.evicted();
    let kicked_fut = kicked.notified();
    tokio::pin!(superseded_fut, evicted_fut, kicked_fut);
    let mut revocations = hub.keyring().revocations();
    let mut flow = s.flush(&mut sink).await;
    while flow == Flow::Continue {
        let deadline = s.next_deadline();
        tokio::select! {
            _ = &mut superseded_fut => {
                // A resume took this connection over; the registry entry is theirs now.
                superseded_now = true;
                flow = Flow::Close;
            }
            _ = &mut kicked_fut => {
                // Closed by an operator: say so, not resumable (its presence
                // members leave now), then go.
                s.push(ProtocolMessage {
                    action: Action::Disconnected,
                    error: Some(
                        AblyError::new(ErrorCode::Disconnected, "Connection closed by the server")
                            .to_info(),
                    ),
                    ..Default::default()
                });
                s.resumable = false;
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, s.flush(&mut sink)).await;
                flow = Flow::Close;
            }
            _ = &mut evicted_fut => {
                // Past its output limits: the outbox already dropped the queue.
                // Leave the channels first (occupancy must not wait on a peer that
                // does not read), say why if the socket still takes it, then go.
                // The connection stays resumable: the client catches up from history.
                s.detach_all();
                s.out.clear();
                s.pending_ack = None;
                s.push(ProtocolMessage {
                    action: Action::Disconnected,
                    error: Some(AblyError::new(ErrorCode::Disconnected, FELL_BEHIND).to_info()),
                    ..Default::default()
                });
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, s.write_out(&mut sink)).await;
                flow = Flow::Close;
            }
            frame = stream.next() => {
                // What was fanned out before this frame goes out before the answer
                // to it: a re-ATTACH's ATTACHED and replay must follow the messages
                // the client will then discard, not precede them.
                rx.drain(usize::MAX, |f| s.out.push(Outgoing::Shared(f)));
                flow = match frame {
                    Some(Ok(f)) => s.on_frame(f).await,
                    _ => Flow::Close,
                };
                // Drain whatever else already arrived so ACKs can be coalesced.
                let mut n = 1;
                while flow == Flow::Continue && n < BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(Ok(f))) => {
                            // Same order rule as above, frame by frame: an earlier
                            // frame of this batch may have fanned something out.
                            rx.drain(usize::MAX, |f| s.out.push(Outgoing::Shared(f)));
                            flow = s.on_frame(f).await;
                        }
                        Some(_) => flow = Flow::Close,
                        None => break,
                    }
                    n += 1;
                }
                if s.flush(&mut sink).await == Flow::Close {
                    flow = Flow::Close;
                }
            }
            Some(frame) = rx.recv() => {
                s.out.push(Outgoing::Shared(frame));
                // Forward everything already queued (up to a bound) in one write: a
                // subscriber that fell behind catches up with one syscall per batch
                // instead of one per message.
                let room = OUT_BATCH.saturating_sub(s.out.len());
                rx.drain(room, |f| s.out.push(Outgoing::Shared(f)));
                flow = s.flush(&mut sink).await;
            }
            _ = heartbeat.tick() => {
                if s.heartbeats {
                    s.push(ProtocolMessage::new(Action::Heartbeat));
                } else {
                    s.out.push(Outgoing::Ping);
                }
                flow = s.flush(&mut sink).await;
            }
            Ok(()) = revocations.changed() => {
                // Tokens were revoked: this connection's own may be among them.
                if hub.keyring().is_revoked(&s.principal, now_ms()) {
                    s.push(ProtocolMessage {
                        action: Action::Disconnected,
                        error: Some(AblyError::of(ErrorCode::TokenRevoked).to_info()),
                        ..Default::default()
                    });
                    s.resumable = false;
                    let _ = s.flush(&mut sink).await;
                    flow = Flow::Close;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                flow = s.on_deadline();
                if s.flush(&mut sink).await == Flow::Close {
                    flow = Flow::Close;
                }
            }
        }
    }
    // A peer that does not read cannot take a close frame either.
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, sink.close()).await;
    s.conn.tx.close();
    s.detach_all();
    s.end_presence(superseded_now);
    slot.set_resumable(s.resumable);
    drop(slot);
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

impl Session {
    fn connected_message(&self) -> ProtocolMessage {
        let cfg = self.hub.config();
        ProtocolMessage {
            action: Action::Connected,
            connection_id: Some(self.conn.connection_id.clone()),
            connection_details: Some(ConnectionDetails {
                // A wildcard token without a clientId of the connection's own is
                // reported as `*` (the SDK's auth.clientId then becomes `*`).
                client_id: self.client_id.clone().or_else(|| {
                    (self.principal.client_id.as_deref() == Some("*")).then(|| "*".to_owned())
                }),
                connection_key: self.connection_key.clone(),
                max_message_size: cfg.max_message_size as u64,
                max_frame_size: cfg.max_frame_size as u64,
                max_inbound_rate: u64::from(cfg.max_inbound_rate),
                connection_state_ttl: cfg.connection_state_ttl_ms,
                server_id: cfg.server_id.clone(),
                max_idle_interval: cfg.max_idle_interval_ms,
            }),
            ..Default::default()
        }
    }

    /// Queues a message, first flushing any coalesced ACK so order is preserved.
    fn push(&mut self, pm: ProtocolMessage) {
        self.flush_ack();
        self.out.push(Outgoing::Message(Box::new(pm)));
    }

    fn flush_ack(&mut self) {
        if let Some((serial, count, res)) = self.pending_ack.take() {
            self.out.push(Outgoing::Message(Box::new(ProtocolMessage {
                action: Action::Ack,
                msg_serial: Some(serial),
                count: Some(count),
                res: Some(res),
                ..Default::default()
            })));
        }
    }

    fn ack(&mut self, serial: i64) {
        self.ack_with(serial, Vec::new());
    }

    /// Acknowledges `serial` with the serials its messages got; consecutive
    /// acknowledgements go out as one ACK with one result each.
    fn ack_with(&mut self, serial: i64, serials: Vec<String>) {
        let result = PublishResult { serials };
        match &mut self.pending_ack {
            Some((start, count, res)) if start.checked_add(*count as i64) == Some(serial) => {
                *count += 1;
                res.push(result);
            }
            _ => {
                self.flush_ack();
                self.pending_ack = Some((serial, 1, vec![result]));
            }
        }
    }

    fn nack(&mut self, serial: i64, err: &AblyError) {
        self.push(ProtocolMessage {
            action: Action::Nack,
            msg_serial: Some(serial),
            count: Some(1),
            error: Some(err.to_info()),
            ..Default::default()
        });
    }

    /// Writes everything queued; `Close` if the transport failed.
    async fn flush<S>(&mut self, sink: &mut S) -> Flow
    where
        S: Sink<Frame> + Unpin,
        S::Error: Display,
    {
        // A peer that stops reading must not pin this task (and its queue) forever.
        let limit = Duration::from_millis(self.hub.config().max_idle_interval_ms.max(1000) * 2);
        let outbox = self.conn.tx.clone();
        tokio::select! {
            written = tokio::time::timeout(limit, self.write_out(sink)) => match written {
                Ok(flow) => flow,
                Err(_) => {
                    tracing::debug!("realtime transport write timed out");
                    Flow::Close
                }
            },
            // Evicted while blocked on the socket: stop writing; the session loop
            // sees the eviction next and says goodbye.
            () = outbox.evicted() => Flow::Continue,
        }
    }

    async fn write_out<S>(&mut self, sink: &mut S) -> Flow
    where
        S: Sink<Frame> + Unpin,
        S::Error: Display,
    {
        self.flush_ack();
        for item in std::mem::take(&mut self.out) {
            let frame = match item {
                Outgoing::Message(pm) => match encode_frame(&pm, self.format) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(error = %e, "encoding failed");
                        continue;
                    }
                },
                Outgoing::Shared(sf) => {
                    // In the transport's hands from here (it buffers at most about
                    // one frame before it waits for the socket).
                    self.conn.tx.release(&sf);
                    match sf.frame(self.format) {
                        Some(f) => f,
                        None => continue,
                    }
                }
                Outgoing::Ping => Frame::Ping(bytes::Bytes::new()),
            };
            if sink.feed(frame).await.is_err() {
                return Flow::Close;
            }
        }
        match sink.flush().await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Flow {
        if frame == Frame::Close {
            return Flow::Close;
        }
        match check_frame_format(&frame, self.format).and_then(|()| decode_frame(&frame)) {
            Ok(Some(pm)) => self.on_message(pm).await,
            Ok(None) => Flow::Continue,
            Err(e) => {
                // Broken framing: say why, then close; other connections are untouched.
                self.push(error_message(&e));
                self.resumable = false;
                Flow::Close
            }
        }
    }

    async fn on_message(&mut self, pm: ProtocolMessage) -> Flow {
        match pm.action {
            Action::Heartbeat => {
                self.push(ProtocolMessage {
                    action: Action::Heartbeat,
                    id: pm.id,
                    ..Default::default()
                });
                Flow::Continue
            }
            Action::Close => {
                self.push(ProtocolMessage::new(Action::Closed));
                self.resumable = false;
                Flow::Close
            }
            Action::Disconnect => {
                self.push(ProtocolMessage::new(Action::Disconnected));
                Flow::Close
            }
            // The engine calls behind these awaits are boxed: inlined, their state
            // would sit in every connection's task, idle or not (+5 KiB each).
            Action::Attach => {
                Box::pin(self.on_attach(pm)).await;
                Flow::Continue
            }
            Action::Detach => {
                self.on_detach(pm);
                Flow::Continue
            }
            Action::Message => {
                Box::pin(self.on_publish(pm)).await;
                Flow::Continue
            }
            Action::Auth => self.on_auth(pm),
            Action::Sync => {
                Box::pin(self.on_sync_request(pm)).await;
                Flow::Continue
            }
            Action::Presence => {
                self.on_presence(pm);
                Flow::Continue
            }
            Action::Annotation => {
                Box::pin(self.on_annotation(pm)).await;
                Flow::Continue
            }
            Action::Object => {
                if let Some(serial) = pm.msg_serial {
                    self.link.set_last_msg_serial(serial);
                    let e = AblyError::new(
                        ErrorCode::BadRequest,
                        "This operation is not supported by this server yet",
                    );
                    self.nack(serial, &e);
                }
                Flow::Continue
            }
            // Client-bound actions or ones with no meaning from a client: ignored, as
            // Ably does, rather than failing a connection over them.
            Action::Connect
            | Action::Ack
            | Action::Nack
            | Action::Connected
            | Action::Disconnected
            | Action::Closed
            | Action::Error
            | Action::Attached
            | Action::Detached
            | Action::Activate
            | Action::ObjectSync => Flow::Continue,
        }
    }

    /// ANNOTATION from the client: annotations of earlier messages (reactions …).
    async fn on_annotation(&mut self, pm: ProtocolMessage) {
        let Some(serial) = self.take_msg_serial(&pm) else {
            return;
        };
        let (Some(channel), Some(annotations)) = (pm.channel, pm.annotations) else {
            return self.ack(serial);
        };
        if let Err(e) = validate_channel_name(&channel).and_then(|()| {
            if self
                .principal
                .capability
                .allows(&channel, ops::ANNOTATION_PUBLISH)
            {
                self.check_mode(&channel, flags::ANNOTATION_PUBLISH, "publish annotations")
            } else {
                Err(AblyError::new(
                    ErrorCode::CapabilityDenied,
                    format!("Operation annotation-publish not permitted on channel {channel}"),
                ))
            }
        }) {
            return self.nack(serial, &e);
        }
        let publisher = Publisher {
            conn: Some(self.conn.id),
            connection_id: Some(self.conn.connection_id.clone()),
            client_id: self.client_id.clone(),
        };
        let proto_id = pm
            .id
            .unwrap_or_else(|| format!("{}:{}", self.conn.connection_id, serial));
        match self
            .hub
            .publish_annotations(&channel, annotations, &publisher, &proto_id)
            .await
        {
            Ok(()) => self.ack(serial),
            Err(e) => self.nack(serial, &e),
        }
    }

    /// A client's SYNC (`channel.sync()`, RTP19): the channel's whole presence set
    /// (every node's members) again, to an attachment that receives presence. An
    /// empty set is one SYNC without members, which ends the client's sync all
    /// the same.
    async fn on_sync_request(&mut self, pm: ProtocolMessage) {
        let Some(name) = pm.channel else {
            return;
        };
        let granted = self.attached.get(&name).copied().unwrap_or(0);
        if granted & flags::PRESENCE_SUBSCRIBE == 0 {
            return;
        }
        let members = match self.hub.existing_channel(&name) {
            Some(c) => match self.hub.presence_set(&c).await {
                Ok(members) => members,
                Err(e) => return self.channel_error(name, &e),
            },
            None => Vec::new(),
        };
        for sync in crate::presence::full_sync_messages(&name, members) {
            self.push(sync);
        }
    }

    fn channel_error(&mut self, channel: String, e: &AblyError) {
        self.push(ProtocolMessage {
            action: Action::Error,
            channel: Some(channel),
            error: Some(e.to_info()),
            ..Default::default()
        });
    }

    /// Modes the current capability allows on `channel`.
    /// An attachment without `mode` (requested at attach, ∩ capability) may not do
    /// what needs it (40165); a channel not attached is judged by capability alone.
    pub(super) fn check_mode(&self, channel: &str, mode: u64, what: &str) -> Result<(), AblyError> {
        match self.attached.get(channel) {
            Some(granted) if granted & mode == 0 => Err(AblyError::new(
                ErrorCode::ModeNotRequested,
                format!("Unable to {what}; mode not requested when attaching to channel {channel}"),
            )),
            _ => Ok(()),
        }
    }

    fn allowed_modes(&self, channel: &str) -> u64 {
        // A view is judged by the channel it shows.
        let channel = crate::qualifier::base(channel);
        let cap = &self.principal.capability;
        let mut m = 0;
        if cap.allows(channel, ops::PUBLISH) {
            m |= flags::PUBLISH;
        }
        if cap.allows(channel, ops::SUBSCRIBE) {
            m |= flags::SUBSCRIBE | flags::PRESENCE_SUBSCRIBE;
        }
        if cap.allows(channel, ops::PRESENCE) {
            m |= flags::PRESENCE;
        }
        if cap.allows(channel, ops::ANNOTATION_PUBLISH) {
            m |= flags::ANNOTATION_PUBLISH;
        }
        if cap.allows(channel, ops::ANNOTATION_SUBSCRIBE) {
            m |= flags::ANNOTATION_SUBSCRIBE;
        }
        m
    }

    async fn on_attach(&mut self, mut pm: ProtocolMessage) {
        let Some(name) = pm.channel.clone() else {
            return;
        };
        let name_params = match crate::qualifier::parse(&name) {
            Ok(q) => q.params,
            Err(e) => return self.channel_error(name, &e),
        };
        // Params in the name (`[?rewind=1]chan`) count as given; the ATTACH's own win
        // (and only they are echoed).
        let echoed = pm.params.clone();
        if !name_params.is_empty() {
            let params = pm.params.get_or_insert_with(Default::default);
            for (k, v) in name_params {
                params.entry(k).or_insert(v);
            }
        }
        // A `modes` param wins over the modes in the flags (Ably's order).
        let requested = match pm.params.as_ref().and_then(|p| p.get("modes")) {
            Some(names) => modes_from_names(names),
            None => match pm.flags.unwrap_or(0) & flags::ALL_MODES {
                0 => flags::MODES,
                m => m,
            },
        };
        let granted = requested & self.allowed_modes(&name);
        if granted == 0 {
            let e = AblyError::new(
                ErrorCode::CapabilityDenied,
                format!("Channel denied access based on given capability; channel = {name}"),
            );
            return self.channel_error(name, &e);
        }
        if !self.attached.contains_key(&name)
            && self.attached.len() >= self.hub.config().max_channels_per_connection
        {
            let e = AblyError::new(
                ErrorCode::TooManyChannels,
                format!(
                    "Maximum number of channels per connection ({}) exceeded",
                    self.hub.config().max_channels_per_connection
                ),
            );
            return self.channel_error(name, &e);
        }
        let already = self.attached.contains_key(&name);
        let receive = granted & flags::SUBSCRIBE != 0;
        let from = pm
            .channel_serial
            .as_deref()
            .and_then(crate::channel::parse_serial);
        // Rewind applies to a first attach only, not to re-attaches after reconnect.
        let rewind = match pm.params.as_ref().and_then(|p| p.get("rewind")) {
            Some(r)
                if !already && from.is_none() && !pm.has_flag(flags::ATTACH_RESUME) && receive =>
            {
                match parse_rewind(r) {
                    Ok(q) => q,
                    Err(e) => return self.channel_error(name, &e),
                }
            }
            _ => None,
        };
        // `occupancy=metrics…` asks for [meta]occupancy events; only the
        // channel-metadata capability grants them (otherwise silently none, as the
        // attach itself is still allowed).
        let wants_occupancy = pm
            .params
            .as_ref()
            .and_then(|p| p.get("occupancy"))
            .is_some_and(|v| v.starts_with("metrics"));
        if wants_occupancy {
            self.wants_occupancy.insert(name.clone());
        } else {
            self.wants_occupancy.remove(&name);
        }
        let delta = pm
            .params
            .as_ref()
            .and_then(|p| p.get("delta"))
            .is_some_and(|d| d == "vcdiff");
        if delta {
            self.delta_channels.insert(name.clone());
        } else {
            self.delta_channels.remove(&name);
        }
        let sub = Subscriber {
            conn: self.conn.clone(),
            receive,
            presence: granted & flags::PRESENCE_SUBSCRIBE != 0,
            echo: self.echo,
            publish: granted & flags::PUBLISH != 0,
            occupancy: wants_occupancy
                && self
                    .principal
                    .capability
                    .allows(crate::qualifier::base(&name), ops::CHANNEL_METADATA),
            delta,
            primed: false,
            annotations: granted & flags::ANNOTATION_SUBSCRIBE != 0,
        };
        let backlog = if already && from.is_none() {
            // Still attached on this transport: nothing was missed.
            Backlog::None
        } else if let (Some(from), true) = (from, receive) {
            // Re-attach after a reconnect, or a client recovering from a message it
            // could not decode (a delta without its base): replay from the
            // client's channelSerial, whole.
            Backlog::FromSerial {
                from,
                cap: MAX_RESUME_BACKLOG,
            }
        } else if let Some(q) = rewind {
            Backlog::Rewind(q)
        } else {
            Backlog::None
        };
        let resuming = matches!(backlog, Backlog::FromSerial { .. });
        let rewinding = matches!(backlog, Backlog::Rewind(_));
        let channel = self.hub.channel(&name);
        let att = match self.hub.attach(&channel, sub, backlog).await {
            Ok(att) => att,
            Err(e) => {
                drop(channel);
                self.hub.release_channel(&name);
                return self.channel_error(name, &e);
            }
        };
        self.hub.occupancy_changed(&channel);
        drop(channel);
        let mut attached_flags = granted;
        let mut error = None;
        if already {
            attached_flags |= flags::RESUMED;
        } else if resuming {
            // Presence removed while parked also breaks continuity: without RESUMED
            // the client re-enters its members.
            // RESUMED promises connection-level continuity too (presence kept): only a
            // resumed connection can make it. A new connection still gets the missed
            // messages, but the SDK is told to re-enter its presence.
            let presence_lost = self.link.take_presence_lost(&name);
            if att.continuous && !presence_lost && self.resumed_connection {
                attached_flags |= flags::RESUMED;
            } else if !att.continuous {
                error = Some(AblyError::of(ErrorCode::ChannelContinuityLost).to_info());
            }
        }
        if rewinding && !att.backlog.is_empty() {
            attached_flags |= flags::HAS_BACKLOG;
        }
        if !att.members.is_empty() {
            attached_flags |= flags::HAS_PRESENCE;
        }
        self.attached.insert(name.clone(), granted);
        self.requested_modes.insert(name.clone(), requested);
        // The channel params Ably knows are echoed; others are dropped, as Ably does.
        let params: Option<BTreeMap<String, String>> = echoed
            .map(|p| {
                p.into_iter()
                    .filter(|(k, _)| KNOWN_PARAMS.contains(&k.as_str()))
                    .collect::<BTreeMap<_, _>>()
            })
            .filter(|p| !p.is_empty());
        self.push(ProtocolMessage {
            action: Action::Attached,
            channel: Some(name.clone()),
            channel_serial: Some(att.serial),
            flags: Some(attached_flags),
            params,
            error,
            ..Default::default()
        });
        for sync in crate::presence::sync_messages(&name, att.members) {
            self.push(sync);
        }
        // To a delta attachment the replay goes as deltas too, the first whole.
        let mut replay: Vec<_> = att.backlog.iter().map(|b| b.message.clone()).collect();
        if delta {
            crate::delta::encode_messages(None, &mut replay);
        }
        for (stored, m) in att.backlog.into_iter().zip(replay) {
            self.push(ProtocolMessage {
                action: Action::Message,
                channel: Some(name.clone()),
                channel_serial: Some(crate::channel::format_serial(stored.serial)),
                connection_id: m.connection_id.clone(),
                timestamp: m.timestamp,
                messages: Some(vec![m]),
                ..Default::default()
            });
        }
    }

    fn on_detach(&mut self, pm: ProtocolMessage) {
        let Some(name) = pm.channel else {
            return;
        };
        if self.attached.remove(&name).is_some() {
            self.detach_channel(&name);
        }
        self.wants_occupancy.remove(&name);
        self.requested_modes.remove(&name);
        // Presence needs an attachment: detaching leaves implicitly, as in Ably.
        self.hub
            .remove_presence(&self.conn.connection_id, std::slice::from_ref(&name));
        self.push(ProtocolMessage {
            action: Action::Detached,
            channel: Some(name),
            ..Default::default()
        });
    }

    fn detach_channel(&self, name: &str) {
        if let Some(ch) = self.hub.existing_channel(name) {
            ch.detach(self.conn.id);
            self.hub.occupancy_changed(&ch);
            drop(ch);
            self.hub.release_channel(name);
        }
    }

    fn detach_all(&mut self) {
        self.requested_modes.clear();
        for name in std::mem::take(&mut self.attached).into_keys() {
            self.detach_channel(&name);
        }
    }

    /// The msgSerial of a client's MESSAGE, PRESENCE or ANNOTATION, recorded as
    /// the latest; `None` (after acknowledging it again) for a resend after resume
    /// that was already handled.
    pub(super) fn take_msg_serial(&mut self, pm: &ProtocolMessage) -> Option<i64> {
        let last = self.link.last_msg_serial();
        let serial = pm
            .msg_serial
            .unwrap_or_else(|| last.map_or(0, |s| s.saturating_add(1)));
        if last.is_some_and(|last| serial <= last) {
            self.ack(serial);
            return None;
        }
        self.link.set_last_msg_serial(serial);
        Some(serial)
    }

    async fn on_publish(&mut self, pm: ProtocolMessage) {
        let Some(serial) = self.take_msg_serial(&pm) else {
            return;
        };
        match self.check_publish(&pm) {
            Ok(()) => {}
            Err(e) => return self.nack(serial, &e),
        }
        let (Some(channel), Some(messages)) = (pm.channel, pm.messages) else {
            return self.ack(serial);
        };
        let publisher = Publisher {
            conn: Some(self.conn.id),
            connection_id: Some(self.conn.connection_id.clone()),
            client_id: self.client_id.clone(),
        };
        if messages.iter().any(|m| {
            matches!(
                m.action,
                Some(message_actions::UPDATE | message_actions::DELETE | message_actions::APPEND)
            )
        }) {
            return match self.mutate(&channel, messages, &publisher).await {
                Ok(versions) => self.ack_with(serial, versions),
                Err(e) => self.nack(serial, &e),
            };
        }
        let proto_id = pm
            .id
            .unwrap_or_else(|| format!("{}:{}", self.conn.connection_id, serial));
        let published = self
            .hub
            .publish_async(
                &channel,
                messages,
                &publisher,
                Some(proto_id),
                Origin::Realtime,
            )
            .await;
        match published {
            Ok(p) => self.ack_with(serial, p.serials),
            Err(e) => self.nack(serial, &e),
        }
    }

    /// New versions of earlier messages (update, delete, append) sent over the
    /// connection: each names its message by `serial`. Returns the version serials.
    async fn mutate(
        &mut self,
        channel: &str,
        messages: Vec<crate::protocol::Message>,
        publisher: &Publisher,
    ) -> Result<Vec<String>, AblyError> {
        let mut versions = Vec::with_capacity(messages.len());
        for mut m in messages {
            let action = m.action.unwrap_or(message_actions::UPDATE);
            let op = crate::hub::mutation_op(action)?;
            if !self.principal.capability.allows(channel, op) {
                return Err(AblyError::new(
                    ErrorCode::CapabilityDenied,
                    format!("Operation {op} not permitted on channel {channel}"),
                ));
            }
            let serial = m.serial.take().ok_or_else(|| {
                AblyError::new(
                    ErrorCode::InvalidParameterValue,
                    "This message lacks a serial",
                )
            })?;
            crate::codec::normalize_message(&mut m);
            versions.push(
                self.hub
                    .mutate_message(channel, &serial, action, m, publisher)
                    .await?,
            );
        }
        Ok(versions)
    }

    fn check_publish(&mut self, pm: &ProtocolMessage) -> Result<(), AblyError> {
        let Some(channel) = pm.channel.as_deref() else {
            return Err(AblyError::new(
                ErrorCode::BadRequest,
                "MESSAGE without channel",
            ));
        };
        validate_channel_name(channel)?;
        let msgs = pm.messages.as_deref().unwrap_or(&[]);
        if !self.principal.capability.allows(channel, ops::PUBLISH) {
            return Err(AblyError::new(
                ErrorCode::CapabilityDenied,
                format!(
                    "Unable to perform channel operation (permission denied); channel = {channel}"
                ),
            ));
        }
        self.check_mode(channel, flags::PUBLISH, "publish")?;
        let size: usize = msgs.iter().map(|m| m.size()).sum();
        let max = self.hub.config().max_message_size;
        if size > max {
            return Err(AblyError::new(
                ErrorCode::MessageTooLarge,
                format!("Maximum size of messages that can be published at once exceeded (was {size} bytes; limit is {max} bytes)"),
            ));
        }
        for m in msgs {
            let cid = m.client_id.as_deref();
            let ok = match (self.client_id.as_deref(), cid) {
                (_, None) => true,
                (Some(own), Some(c)) => {
                    own == c || self.principal.client_id.as_deref() == Some("*")
                }
                (None, Some(_)) => self.principal.may_use_client_id(cid),
            };
            if !ok {
                return Err(AblyError::new(
                    ErrorCode::InvalidClientId,
                    format!(
                        "Mismatched clientId {:?} for this connection",
                        cid.unwrap_or("")
                    ),
                ));
            }
        }
        if !msgs.is_empty() && !self.bucket.take(msgs.len()) {
            return Err(AblyError::new(
                ErrorCode::RateLimited,
                "Rate limit exceeded; request rejected (max inbound rate per connection)",
            ));
        }
        Ok(())
    }
}

/// Channel modes named in an attach's `modes` param (`"subscribe,presence"`);
/// names Tidewire has no use for (`object_subscribe` …) grant nothing.
fn modes_from_names(names: &str) -> u64 {
    names
        .split(',')
        .map(|n| match n.trim().to_ascii_lowercase().as_str() {
            "presence" => flags::PRESENCE,
            "publish" => flags::PUBLISH,
            "subscribe" => flags::SUBSCRIBE,
            "presence_subscribe" => flags::PRESENCE_SUBSCRIBE,
            "annotation_publish" => flags::ANNOTATION_PUBLISH,
            "annotation_subscribe" => flags::ANNOTATION_SUBSCRIBE,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// Channel params (attach `params`) Ably recognises.
const KNOWN_PARAMS: [&str; 4] = ["rewind", "delta", "occupancy", "modes"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyConfig, RealtimeConfig};
    use crate::history::MemoryHistoryStore;
    use futures::channel::mpsc as fmpsc;

    fn hub() -> Arc<Hub> {
        Hub::new(
            RealtimeConfig {
                keys: vec![KeyConfig {
                    key: "app.k:s".into(),
                    capability: None,
                    revocable_tokens: false,
                }],
                ..Default::default()
            },
            Arc::new(MemoryHistoryStore::default()),
        )
    }

    type Client = (
        fmpsc::UnboundedSender<Result<Frame, String>>,
        fmpsc::UnboundedReceiver<Frame>,
    );

    /// Runs a session over in-memory channels (no sockets).
    fn start(hub: Arc<Hub>, query: &[(&str, &str)]) -> Client {
        let q = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (to_server, from_client) = fmpsc::unbounded::<Result<Frame, String>>();
        let (to_client, from_server) = fmpsc::unbounded::<Frame>();
        tokio::spawn(run_session(hub, q, to_client, from_client));
        (to_server, from_server)
    }

    async fn next_json(rx: &mut fmpsc::UnboundedReceiver<Frame>) -> serde_json::Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
                Ok(Some(Frame::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Ok(Some(Frame::SharedText(b))) => return serde_json::from_slice(&b).unwrap(),
                Ok(Some(_)) => continue,
                other => panic!("no frame: {other:?}"),
            }
        }
    }

    fn send(tx: &fmpsc::UnboundedSender<Result<Frame, String>>, v: serde_json::Value) {
        tx.unbounded_send(Ok(Frame::Text(v.to_string()))).unwrap();
    }

    #[tokio::test]
    async fn connect_attach_publish_ack_over_channels() {
        let (tx, mut rx) = start(hub(), &[("key", "app.k:s"), ("format", "json")]);
        let c = next_json(&mut rx).await;
        assert_eq!(c["action"], 4);
        assert_eq!(c["connectionDetails"]["maxMessageSize"], 65536);
        send(&tx, serde_json::json!({"action": 10, "channel": "a"}));
        let a = next_json(&mut rx).await;
        assert_eq!(a["action"], 11);
        send(
            &tx,
            serde_json::json!({"action": 15, "channel": "a", "msgSerial": 0, "messages": [{"name": "x", "data": "y"}]}),
        );
        let mut got_ack = false;
        let mut got_msg = false;
        for _ in 0..2 {
            let m = next_json(&mut rx).await;
            match m["action"].as_u64() {
                Some(1) => got_ack = m["msgSerial"] == 0 && m["count"] == 1,
                Some(15) => {
                    // The message id is left for the client to derive as
                    // `<protocol id>:0`, i.e. `<connectionId>:0:0`.
                    got_msg = m["messages"][0].get("id").is_none()
                        && m["id"].as_str().is_some_and(|id| id.ends_with(":0"))
                }
                _ => panic!("unexpected {m}"),
            }
        }
        assert!(got_ack && got_msg);
    }

    #[tokio::test]
    async fn server_side_disconnect_says_so_and_ends_the_session() {
        let hub = hub();
        let (tx, mut rx) = start(hub.clone(), &[("key", "app.k:s"), ("clientId", "c1")]);
        let c = next_json(&mut rx).await;
        let id = c["connectionId"].as_str().unwrap().to_string();
        send(&tx, serde_json::json!({"action": 10, "channel": "a"}));
        assert_eq!(next_json(&mut rx).await["action"], 11);
        let listed = hub.connections();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].record.client_id.as_deref(), Some("c1"));
        assert_eq!(listed[0].channels, vec!["a".to_string()]);
        assert!(hub.disconnect(&id));
        let d = next_json(&mut rx).await;
        assert_eq!(d["action"], 6);
        assert_eq!(d["error"]["code"], 80003);
        // The session ends, not resumable: the registry forgets the connection.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => panic!("session did not end"),
            }
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while hub.connection(&id).is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("connection forgotten");
        assert!(!hub.disconnect(&id));
    }

    /// A sink that reports each flush as one batch of the frames fed before it.
    struct BatchSink {
        buf: Vec<Frame>,
        tx: fmpsc::UnboundedSender<Vec<Frame>>,
    }

    impl Sink<Frame> for BatchSink {
        type Error = String;
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), String>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(mut self: std::pin::Pin<&mut Self>, f: Frame) -> Result<(), String> {
            self.buf.push(f);
            Ok(())
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), String>> {
            if !self.buf.is_empty() {
                let batch = std::mem::take(&mut self.buf);
                let _ = self.tx.unbounded_send(batch);
            }
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), String>> {
            self.poll_flush(cx)
        }
    }

    fn batch_json(batch: &[Frame]) -> Vec<serde_json::Value> {
        batch
            .iter()
            .map(|f| match f {
                Frame::Text(t) => serde_json::from_str(t).unwrap(),
                Frame::SharedText(b) => serde_json::from_slice(b).unwrap(),
                other => panic!("unexpected frame {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn queued_fan_out_is_written_in_one_batch_in_order() {
        let hub = hub();
        let q = [("key", "app.k:s"), ("format", "json")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (to_server, from_client) = fmpsc::unbounded::<Result<Frame, String>>();
        let (batch_tx, mut batches) = fmpsc::unbounded::<Vec<Frame>>();
        let sink = BatchSink {
            buf: Vec::new(),
            tx: batch_tx,
        };
        tokio::spawn(run_session(hub.clone(), q, sink, from_client));
        let next = |b: Option<Vec<Frame>>| batch_json(&b.expect("batch"));
        let connected = next(batches.next().await);
        assert_eq!(connected[0]["action"], 4);
        send(
            &to_server,
            serde_json::json!({"action": 10, "channel": "b"}),
        );
        let attached = next(batches.next().await);
        assert_eq!(attached[0]["action"], 11);
        // Queue several messages while the session cannot run (no await in between):
        // they must all leave in one flush, intact and in publish order.
        const N: usize = 20;
        let publisher = Publisher::default();
        for i in 0..N {
            let msg = crate::protocol::Message {
                data: Some(crate::protocol::MessageData::String(format!("m{i}"))),
                ..Default::default()
            };
            hub.publish("b", vec![msg], &publisher, None, Origin::Backend);
        }
        let batch = next(batches.next().await);
        assert_eq!(batch.len(), N, "one write for all queued messages");
        let mut last_serial = String::new();
        for (i, pm) in batch.iter().enumerate() {
            assert_eq!(pm["action"], 15);
            assert_eq!(pm["messages"][0]["data"], format!("m{i}"));
            let serial = pm["channelSerial"].as_str().unwrap().to_owned();
            assert!(serial > last_serial, "serials increase");
            last_serial = serial;
        }
    }

    #[tokio::test]
    async fn bad_key_gets_error_then_close() {
        let (_tx, mut rx) = start(hub(), &[("key", "app.k:wrong")]);
        let e = next_json(&mut rx).await;
        assert_eq!(e["action"], 9);
        assert_eq!(e["error"]["code"], 40101);
        let mut closed = false;
        while let Ok(Some(f)) = tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
            if f == Frame::Close {
                closed = true;
            }
        }
        assert!(closed);
    }
}
