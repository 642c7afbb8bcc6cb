//! One RESP connection: read, parse every complete command in the buffer, execute,
//! and write all replies with one write. Out-of-band pushes (pub/sub, MONITOR)
//! arrive on a channel and are interleaved between batches. A framing error gets
//! Redis's `-ERR Protocol error: …` and closes only this connection; so does a query
//! buffer over `client-query-buffer-limit` (without a reply, as Redis).
//!
//! A write never outlives a kill: a client that stops reading while others publish
//! to it is killed by the output-buffer limit (`ClientInfo::push`), and its pending
//! write is abandoned so the task ends and its memory is freed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tidewire_resp::{Limits, ProtocolError, Reply, RequestParser};
use tidewire_store::client::ReplyMode;
use tidewire_store::{Blocked, Client, ClientInfo, Outcome, Store};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::busy_poll::BusyPoll;
use crate::engine::{Answers, Engine, EngineSession, Forwarded};

/// Replies are flushed once this much is buffered even mid-pipeline, so a huge
/// pipeline does not buffer all its replies in memory.
const FLUSH_THRESHOLD: usize = 64 * 1024;
/// Request size limits before AUTH (Redis's values).
const UNAUTH_MAX_ARGS: i64 = 10;
const UNAUTH_MAX_BULK: usize = 16 * 1024;
/// Pushes written per wake-up before looking at the socket again.
const PUSH_BATCH: usize = 256;
/// Free room the input buffer has before every read, at least (Redis reads 16 KB).
const READ_ROOM: usize = 8 * 1024;

pub async fn serve(
    store: Arc<Store>,
    engine: Engine,
    stream: TcpStream,
    shutdown: watch::Receiver<bool>,
    busy_poll: Option<Arc<BusyPoll>>,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    serve_stream(store, engine, stream, peer, local, shutdown, busy_poll).await
}

/// Serves one RESP connection over any byte stream (plain TCP, or TLS on
/// `tls-port`); `peer` and `local` are its addresses for CLIENT LIST.
pub async fn serve_stream<S>(
    store: Arc<Store>,
    engine: Engine,
    stream: S,
    peer: String,
    local: String,
    mut shutdown: watch::Receiver<bool>,
    busy_poll: Option<Arc<BusyPoll>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut client = store.new_client(peer, local, "resp");
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<(Reply, usize)>();
    client.info.set_push_channel(push_tx);
    let info = client.info.clone();
    let mut conn = Conn {
        store: store.clone(),
        info: info.clone(),
        stream,
        parser: RequestParser::new(limits(&store)),
        inbuf: BytesMut::with_capacity(16 * 1024),
        out: BytesMut::with_capacity(16 * 1024),
        replies: Vec::new(),
        batch_clock: false,
        write_seq: 0,
        shutdown: shutdown.clone(),
        busy_poll,
        engine: engine.session(),
        held: None,
    };
    // A kill (CLIENT KILL, output-buffer limit, shutdown: the accept loop kills every
    // connection) closes the push channel, so the loop waits on two sources only: a
    // Notify or watch polled each turn cost a lock round trip per unpipelined command.
    // Registered after the accept loop's sweep: the shutdown flag is set already.
    if *shutdown.borrow_and_update() {
        info.kill();
    }
    loop {
        if info.is_killed() {
            break;
        }
        make_read_room(&mut conn.inbuf);
        // Not biased: under a constant stream of pushes the client's own commands
        // (UNSUBSCRIBE …) must still be read.
        tokio::select! {
            push = push_rx.recv() => {
                let Some((push, size)) = push else { break };
                conn.encode(&client, &push);
                let mut sizes = size;
                for _ in 0..PUSH_BATCH {
                    match push_rx.try_recv() {
                        Ok((p, s)) => { conn.encode(&client, &p); sizes += s; }
                        Err(_) => break,
                    }
                }
                let ok = conn.flush().await;
                info.pushed(sizes);
                if !ok { break; }
            }
            read = conn.stream.read_buf(&mut conn.inbuf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        store.stats.total_net_input_bytes.add(n as u64);
                        store.stats.total_reads_processed.add(1);
                        if !conn.process(&mut client, &mut push_rx).await {
                            break;
                        }
                        if conn.inbuf.len() as u64 > store.config.query_buf_limit.load(Ordering::Relaxed) {
                            tracing::warn!(client = client.id(), "closing client that reached max query buffer length");
                            break;
                        }
                    }
                }
            }
        }
    }
    store.drop_client(&mut client);
}

/// Gives the next read at least `READ_ROOM` bytes. `read_buf` alone grows a buffer
/// only once it is full, and every parsed command split off the front shrinks its
/// free tail: before this, one pipelined batch in ~30 arrived in two reads, so it was
/// run and answered in two halves, two reply writes where Redis makes one. While
/// nothing is pending (the usual case) and no split-off command is alive, `reserve`
/// only moves back to the start of the same allocation.
fn make_read_room(inbuf: &mut BytesMut) {
    if inbuf.capacity() - inbuf.len() < READ_ROOM {
        inbuf.reserve(READ_ROOM);
    }
}

/// How long a script must have run before other connections wait for it by the
/// timer instead of queueing on the keyspace lock (the script hands its worker off
/// after 2 ms: see `scripting::host`).
const SCRIPT_WAIT_AFTER_MS: u64 = 2;

/// While another connection's script runs, waits without holding a worker
/// thread (a command would otherwise block one on the keyspace lock the script
/// holds), until the script ends or passes `busy-reply-threshold`: then the
/// command runs and gets `-BUSY`, or, for SCRIPT KILL and the like, is served.
async fn wait_for_script(store: &Store) {
    let running = &store.scripts.running;
    let threshold = store.config.get_u64("busy-reply-threshold");
    while running.is_running() && !running.busy(threshold) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Room for a large argument whose `$len` header has arrived (`total` counts its
/// CRLF), grown with the bytes that really came: at most as much again as is
/// buffered, so a client declaring 512 MB and sending a few bytes costs a few
/// bytes, not an allocation of the declared size that would count against
/// `maxmemory` and evict other clients' keys. Doubling keeps the copies of a real
/// large value linear in its size.
fn grow_for_bulk(inbuf: &mut BytesMut, total: usize) {
    let missing = total.saturating_sub(inbuf.len());
    let free = inbuf.capacity() - inbuf.len();
    if missing > free {
        inbuf.reserve(missing.min(inbuf.len().max(READ_ROOM)));
    }
}

fn limits(store: &Store) -> Limits {
    Limits {
        max_bulk_len: store.config.proto_max_bulk_len.load(Ordering::Relaxed),
        ..Limits::default()
    }
}

struct Conn<S> {
    store: Arc<Store>,
    info: Arc<ClientInfo>,
    stream: S,
    parser: RequestParser,
    inbuf: BytesMut,
    out: BytesMut,
    replies: Vec<Reply>,
    /// Whether the previous command of this batch ran without an await since (its
    /// end time may then start the next command's clock).
    batch_clock: bool,
    /// Write-log sequence of this connection's writes whose replies are buffered:
    /// with `appendfsync always` they are sent only once it is on disk.
    write_seq: u64,
    /// Seen by a blocked client's wait, so shutdown does not wait for its timeout.
    shutdown: watch::Receiver<bool>,
    /// Told of every turn, so the event loop keeps polling while turns keep coming.
    busy_poll: Option<Arc<BusyPoll>>,
    /// With `--engine`: where keyspace commands go. `None` (embedded): the store
    /// runs everything, as it always did.
    engine: Option<EngineSession>,
    /// A command parsed while gathering a pipeline for the engine that did not
    /// join the batch (or the protocol error met): the next to run.
    held: Option<Result<Vec<Bytes>, ProtocolError>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    fn encode(&mut self, client: &Client, reply: &Reply) {
        reply.encode(&mut self.out, client.proto);
    }

    /// Runs one command, remembering the log sequence of any write it made.
    fn execute(&mut self, client: &mut Client, argv: &[Bytes]) -> Outcome {
        // Drop a sequence another front door may have left on this thread.
        tidewire_store::exec::take_write_seq();
        // Within a batch run without awaiting, the previous command's end is this
        // one's start (see `Store::execute_at`).
        let start = if self.batch_clock {
            client.last_end.take()
        } else {
            None
        };
        let start = start.unwrap_or_else(std::time::Instant::now);
        self.batch_clock = true;
        let outcome = self
            .store
            .execute_at(client, argv, &mut self.replies, start);
        self.write_seq = self.write_seq.max(tidewire_store::exec::take_write_seq());
        outcome
    }

    async fn flush(&mut self) -> bool {
        // Time passes while writing: the next command reads the clock afresh.
        self.batch_clock = false;
        if self.out.is_empty() {
            return true;
        }
        let mut waited_for_disk = false;
        if self.write_seq > 0 {
            // appendfsync always: acknowledge only what is on disk. Batches of many
            // clients share one fsync (the AOF writer's group commit).
            let seq = std::mem::take(&mut self.write_seq);
            if let Some(mut durable) = self.store.durable_waiter() {
                durable.wait_for(seq).await;
                waited_for_disk = true;
            }
        }
        if let Some(poller) = &self.busy_poll {
            poller.turn();
        }
        // Write at the end of the worker's turn, not now: the other connections that
        // became readable together with this one run first, so their replies leave in
        // one burst, as Redis writes every reply in `beforeSleep`. Each write to a
        // client asleep in epoll_wait costs a wake-up (an IPI on a VM); in a burst only
        // the first write finds it asleep. Interleaving read, run, write per
        // connection cost ~20% of server CPU and ~18% of the client's on pipelined
        // SETs over 1M random keys (docs/benchmarks.md). After an fsync the
        // burst is there already: every connection it covered was woken at once.
        // Not `tokio::task::yield_now`: that defers the task until the runtime has
        // polled the I/O driver, one extra `epoll_wait` per turn (two per turn where
        // Redis makes one, ~8 % of the syscalls of an unpipelined SET).
        if !waited_for_disk {
            EndOfTurn::default().await;
        }
        self.store
            .stats
            .total_net_output_bytes
            .add(self.out.len() as u64);
        self.store.stats.total_writes_processed.add(1);
        // Writing first: a reply due before a kill (CLIENT KILL SKIPME NO) still goes
        // out; a write stuck on a client that does not read ends with the kill.
        let ok = tokio::select! {
            biased;
            r = self.stream.write_all(&self.out) => r.is_ok(),
            _ = self.info.killed() => false,
        };
        self.out.clear();
        ok
    }

    /// Executes every complete command in the input buffer. False: close.
    async fn process(
        &mut self,
        client: &mut Client,
        push_rx: &mut mpsc::UnboundedReceiver<(Reply, usize)>,
    ) -> bool {
        self.parser.set_limits(limits(&self.store));
        self.batch_clock = false;
        loop {
            if let Some(e) = self.unauthenticated_limit(client) {
                self.encode(client, &Reply::Error(format!("ERR Protocol error: {e}")));
                self.flush().await;
                return false;
            }
            // A script that has run for a while has handed its worker thread off;
            // one that only started will release the keyspace in moments, and
            // waiting for it by the timer would cost more than the lock does.
            let running = &self.store.scripts.running;
            if running.is_running() && running.elapsed_ms() >= SCRIPT_WAIT_AFTER_MS {
                wait_for_script(&self.store).await;
            }
            let next = match self.held.take() {
                Some(held) => held.map(Some),
                None => self.parser.next_command(&mut self.inbuf),
            };
            let argv = match next {
                Ok(Some(argv)) => argv,
                Ok(None) => {
                    if !client.authenticated
                        && self
                            .parser
                            .pending_bulk_len()
                            .is_some_and(|n| n > UNAUTH_MAX_BULK)
                    {
                        self.encode(
                            client,
                            &Reply::Error("ERR Protocol error: unauthenticated bulk length".into()),
                        );
                        self.flush().await;
                        return false;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(client = client.id(), error = %e, "protocol error");
                    self.encode(client, &Reply::Error(format!("ERR {e}")));
                    self.flush().await;
                    return false;
                }
            };
            if let Some(engine) = self.engine.as_mut() {
                // Time passes while the engine answers: the next command reads the
                // clock afresh.
                self.batch_clock = false;
                // A pipeline's next commands may go with this one.
                let gathered = engine.gather(
                    client,
                    &argv,
                    &mut self.parser,
                    &mut self.inbuf,
                    &mut self.held,
                );
                // A kill, shutdown or the client leaving ends the wait (a BLPOP on
                // the engine may last); dropping it closes any connection of the
                // client's own, which makes the engine stop blocking for it.
                let answers = {
                    let execute = engine.execute_pipelined(&self.store, client, &argv, gathered);
                    tokio::pin!(execute);
                    loop {
                        tokio::select! {
                            biased;
                            _ = self.info.killed() => return false,
                            _ = self.shutdown.changed() => return false,
                            reply = &mut execute => break reply,
                            read = self.stream.read_buf(&mut self.inbuf), if self.inbuf.len() < 1024 * 1024 => {
                                let Ok(n @ 1..) = read else { return false };
                                self.store.stats.total_net_input_bytes.add(n as u64);
                                self.store.stats.total_reads_processed.add(1);
                            }
                        }
                    }
                };
                let forwarded = match answers {
                    Answers::One(forwarded) => forwarded,
                    Answers::Many(replies) => {
                        for reply in replies {
                            self.replies.push(reply);
                            self.take_replies(client);
                            if self.out.len() >= FLUSH_THRESHOLD && !self.flush().await {
                                return false;
                            }
                        }
                        continue;
                    }
                };
                match forwarded {
                    Forwarded::Local => {}
                    // Its answers come through the push channel.
                    Forwarded::Pushed => continue,
                    Forwarded::Reply(reply) => {
                        self.replies.push(reply);
                        self.take_replies(client);
                        if self.out.len() >= FLUSH_THRESHOLD && !self.flush().await {
                            return false;
                        }
                        continue;
                    }
                }
            }
            let outcome = self.execute(client, &argv);
            if let Outcome::Blocked(blocked) = outcome {
                if !self.flush().await {
                    return false;
                }
                if !self.wait_blocked(client, &argv, blocked, push_rx).await {
                    return false;
                }
            }
            self.take_replies(client);
            if client.close_after_reply || client.info.is_killed() {
                self.flush().await;
                return false;
            }
            if self.out.len() >= FLUSH_THRESHOLD && !self.flush().await {
                return false;
            }
        }
        if let Some(need) = self.parser.pending_bulk_len() {
            grow_for_bulk(&mut self.inbuf, need + 2);
        }
        self.flush().await
    }

    /// Before AUTH, requests are kept small (as Redis: at most 10 arguments of at
    /// most 16 KB), so an unauthenticated peer cannot make the server buffer much.
    fn unauthenticated_limit(&self, client: &Client) -> Option<&'static str> {
        if client.authenticated || self.parser.is_mid_request() {
            return None;
        }
        let buf = &self.inbuf[..];
        if buf.first() != Some(&b'*') {
            return None;
        }
        let end = buf.iter().position(|b| *b == b'\r')?;
        let n: i64 = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
        (n > UNAUTH_MAX_ARGS).then_some("unauthenticated multibulk length")
    }

    /// Encodes the replies of the command just run, honouring CLIENT REPLY. Pub/sub
    /// frames (push replies, arrays in RESP2) are always sent, as in Redis.
    fn take_replies(&mut self, client: &mut Client) {
        // Encoded by reference and cleared, so the vector's buffer is reused by the
        // next command instead of being freed and allocated again on every command.
        let mut replies = std::mem::take(&mut self.replies);
        let silent = match client.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                client.reply_mode = ReplyMode::On;
                true
            }
            ReplyMode::SkipNext => {
                client.reply_mode = ReplyMode::Skip;
                true
            }
        };
        for r in &replies {
            if !silent || matches!(r, Reply::Push(_)) {
                self.encode(client, r);
            }
        }
        replies.clear();
        self.replies = replies;
    }

    /// Parks the client until a key it waits on gets data, its timeout passes, it is
    /// unblocked or killed, or it disconnects. Pushes keep flowing meanwhile.
    ///
    /// Normally the client that pushed serves this one (see `tidewire_store::blocking`)
    /// and the reply is waiting when the notification arrives. A timeout or CLIENT
    /// UNBLOCK racing such a push loses: once a pusher has started serving, its reply
    /// is the one sent, so no popped element is ever dropped.
    async fn wait_blocked(
        &mut self,
        client: &mut Client,
        argv: &[Bytes],
        mut blocked: Blocked,
        push_rx: &mut mpsc::UnboundedReceiver<(Reply, usize)>,
    ) -> bool {
        let info = client.info.clone();
        info.blocked.store(true, Ordering::Relaxed);
        info.unblock.store(0, Ordering::Relaxed);
        let result = loop {
            let deadline = blocked.deadline;
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = info.killed() => {
                    blocked.waiter.abandon();
                    self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                    break false;
                }
                _ = self.shutdown.changed() => {
                    blocked.waiter.abandon();
                    self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                    break false;
                }
                _ = blocked.waiter.notify.notified() => {
                    blocked.waiter.take_wakeup();
                    if let Some(replies) = blocked.waiter.take_served() {
                        self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                        self.replies.extend(replies);
                        // Its writes ran on the server's side, logged under another
                        // client: WAITAOF then waits for everything logged so far.
                        if let Some(aof) = self.store.persist.aof() {
                            client.write_seq = client.write_seq.max(aof.appended());
                        }
                        break true;
                    }
                    if blocked.waiter.is_serving() {
                        continue;
                    }
                    // A plain wake-up (no reply handed over): run the command again.
                    client.retrying = true;
                    let again = self.execute(client, argv);
                    client.retrying = false;
                    match again {
                        Outcome::Replies => {
                            blocked.waiter.abandon();
                            self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                            break true;
                        }
                        Outcome::Blocked(next) => {
                            // Nothing for us after all: keep our original place in each
                            // key's queue (FIFO) and drop the new registration. Its
                            // timeout reply is the newer (WAITAOF's counts move).
                            next.waiter.abandon();
                            self.store.blocking.unregister(&next.waiter, &next.keys);
                            blocked.timeout_reply = next.timeout_reply;
                            continue;
                        }
                    }
                }
                _ = sleep => {
                    if !blocked.waiter.abandon() {
                        // Being served right now: the reply is on its way.
                        blocked.deadline = None;
                        continue;
                    }
                    self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                    let blocked_us = blocked.waiter.job().map_or(0, |j| j.blocked_us);
                    self.store
                        .account_unblocked(argv, blocked_us, &blocked.timeout_reply);
                    self.replies.push(blocked.timeout_reply.clone());
                    break true;
                }
                _ = info.unblock_notify.notified() => {
                    if !blocked.waiter.abandon() {
                        continue;
                    }
                    self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                    let reply = if info.unblock.load(Ordering::Relaxed) == 2 {
                        Reply::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into())
                    } else {
                        blocked.timeout_reply.clone()
                    };
                    let blocked_us = blocked.waiter.job().map_or(0, |j| j.blocked_us);
                    self.store.account_unblocked(argv, blocked_us, &reply);
                    self.replies.push(reply);
                    break true;
                }
                Some((push, size)) = push_rx.recv() => {
                    self.encode(client, &push);
                    let ok = self.flush().await;
                    info.pushed(size);
                    if !ok {
                        blocked.waiter.abandon();
                        self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                        break false;
                    }
                }
                read = self.stream.read_buf(&mut self.inbuf), if self.inbuf.len() < 1024 * 1024 => {
                    // Commands sent while blocked wait their turn; a closed socket ends
                    // the wait so no waiter is left behind.
                    let Ok(n @ 1..) = read else {
                        blocked.waiter.abandon();
                        self.store.blocking.unregister(&blocked.waiter, &blocked.keys);
                        break false;
                    };
                    self.store.stats.total_net_input_bytes.add(n as u64);
                    self.store.stats.total_reads_processed.add(1);
                }
            }
        };
        info.blocked.store(false, Ordering::Relaxed);
        result
    }
}

/// Goes to the back of the worker's run queue once: the tasks already queued (the
/// connections the same readiness event woke) run before this one resumes, and the
/// runtime parks only when all of them are done. A task that wakes itself while
/// being polled is queued again at the back (tokio's "notified while running"), with
/// no trip through the I/O driver.
#[derive(Default)]
struct EndOfTurn {
    yielded: bool,
}

impl std::future::Future for EndOfTurn {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.yielded {
            return std::task::Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_room_follows_received_bytes_not_the_declared_length() {
        let declared = 512 * 1024 * 1024 + 2;
        let mut inbuf = BytesMut::new();
        grow_for_bulk(&mut inbuf, declared);
        assert!(inbuf.capacity() < 64 * 1024, "{}", inbuf.capacity());
        // Fed 1 MB in 16 KB reads, capacity stays within a small multiple of it.
        for _ in 0..64 {
            grow_for_bulk(&mut inbuf, declared);
            inbuf.extend_from_slice(&[b'x'; 16 * 1024]);
            assert!(inbuf.capacity() <= 4 * inbuf.len() + 64 * 1024);
        }
        // Near the end, the room is exactly what is missing.
        let mut inbuf = BytesMut::from(&[b'x'; 100_000][..]);
        grow_for_bulk(&mut inbuf, 100_010);
        assert!(inbuf.capacity() >= 100_010);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn end_of_turn_lets_queued_tasks_run_first() {
        // A task already in the run queue runs before the yielding one resumes.
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let other = {
            let order = order.clone();
            tokio::spawn(async move { order.lock().push("queued") })
        };
        EndOfTurn::default().await;
        order.lock().push("resumed");
        other.await.unwrap();
        assert_eq!(*order.lock(), ["queued", "resumed"]);
    }
}
