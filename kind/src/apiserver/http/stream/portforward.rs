//! `portforward.k8s.io` over SPDY: for every forwarded connection the
//! client opens an error stream and a data stream with the same
//! `requestID` and the pod `port` in their headers. The server connects to
//! the port inside the pod, copies bytes between the data stream and the
//! connection (a FIN half-closes either way), and ends by closing the error
//! stream — after writing the reason into it when the connection failed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::PodStreams;
use super::spdy::{self, Decoder, Encoder, Frame};

/// The WebSocket subprotocol that tunnels SPDY (kubectl ≥ 1.31).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol negotiated over plain SPDY.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// Data chunks queued per connection towards the pod.
const QUEUE: usize = 64;

/// Where forwarded connections go.
#[derive(Clone)]
pub struct Target {
    pub streams: Arc<dyn PodStreams>,
    pub namespace: String,
    pub pod: String,
}

/// A forwarded connection being set up: its two streams and its port.
#[derive(Default)]
struct Pending {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

/// Serves SPDY tunnelled in the WebSocket's binary messages.
pub async fn serve_websocket(socket: WebSocket, target: Target) {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let (mut sink, mut source) = socket.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(theirs);
    let outbound = async move {
        let mut buf = vec![0u8; 32 << 10];
        while let Ok(n) = from_spdy.read(&mut buf).await {
            if n == 0
                || sink
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
            {
                break;
            }
        }
        let close = CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    };
    let inbound = async move {
        while let Some(Ok(msg)) = source.next().await {
            let done = match msg {
                Message::Binary(b) => to_spdy.write_all(&b).await.is_err(),
                Message::Close(_) => true,
                _ => false,
            };
            if done {
                break;
            }
        }
        let _ = to_spdy.shutdown().await;
    };
    tokio::join!(serve(ours, target), outbound, inbound);
}

/// Serves a SPDY connection until the client goes away.
pub async fn serve<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let write_task = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut decoder = Decoder::default();
    let mut encoder = Encoder::default();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // Data stream id → the queue towards its pod connection.
    let mut to_pod: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut connections = JoinSet::new();
    'read: loop {
        // `read_buf` reads nothing into a full buffer: keep room.
        buf.reserve(32 << 10);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            let frame = match decoder.next(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("port-forward: {e}");
                    break 'read;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, .. } => {
                    let header = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v.as_str())
                    };
                    let request = header("requestid").unwrap_or("").to_string();
                    let port = header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
                    let entry = pending.entry(request.clone()).or_default();
                    match header("streamtype") {
                        Some("error") => entry.error = Some(stream_id),
                        Some("data") => entry.data = Some(stream_id),
                        _ => {
                            if out
                                .send(spdy::rst_stream(stream_id, spdy::REFUSED_STREAM))
                                .await
                                .is_err()
                            {
                                break 'read;
                            }
                            continue;
                        }
                    }
                    entry.port = entry.port.or(port);
                    if out.send(encoder.syn_reply(stream_id)).await.is_err() {
                        break 'read;
                    }
                    if let Some(Pending {
                        error: Some(error),
                        data: Some(data),
                        port,
                    }) = pending.get(&request)
                    {
                        let (tx, rx) = mpsc::channel(QUEUE);
                        to_pod.insert(*data, tx);
                        connections.spawn(forward(target.clone(), *port, *data, *error, rx, out.clone()));
                        pending.remove(&request);
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    if let Some(tx) = to_pod.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            to_pod.remove(&stream_id);
                        }
                        if fin {
                            to_pod.remove(&stream_id); // half-close towards the pod
                        }
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    to_pod.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    if out.send(spdy::ping(id)).await.is_err() {
                        break 'read;
                    }
                }
                Frame::GoAway => break 'read,
                Frame::Other => {}
            }
        }
    }
    connections.abort_all();
    drop(out);
    let _ = write_task.await;
}

/// One forwarded connection.
async fn forward(
    target: Target,
    port: Option<u16>,
    data: u32,
    error: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let connected = match port {
        Some(port) => target
            .streams
            .port_forward(&target.namespace, &target.pod, port)
            .await
            .map_err(|e| format!("error forwarding port {port} to pod {}: {e}", target.pod)),
        None => Err("the stream's port header is missing or not a port number".to_string()),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(message) => {
            let _ = out.send(spdy::data(error, false, message.as_bytes())).await;
            let _ = out.send(spdy::data(error, true, b"")).await;
            let _ = out.send(spdy::data(data, true, b"")).await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = tcp.into_split();
    let up = async move {
        while let Some(chunk) = from_client.recv().await {
            if pod_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = pod_write.shutdown().await;
    };
    let down = {
        let out = out.clone();
        async move {
            let mut buf = vec![0u8; spdy::MAX_DATA];
            while let Ok(n) = pod_read.read(&mut buf).await {
                if n == 0 || out.send(spdy::data(data, false, &buf[..n])).await.is_err() {
                    break;
                }
            }
            let _ = out.send(spdy::data(data, true, b"")).await;
            // kubectl waits for the error stream's end once the pod's side
            // ended, whether or not its own side is still open.
            let _ = out.send(spdy::data(error, true, b"")).await;
        }
    };
    tokio::join!(up, down);
}
