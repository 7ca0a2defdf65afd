//! An exec or attach [`Session`] over a WebSocket in the channel protocol
//! ([`channel`]): output pumped out as it comes, stdin and resizes in, and
//! at the end the exit `Status` on the error channel and a normal close
//! (kubectl treats any other close as an error). A client that leaves ends
//! the session, which ends its process.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::channel::{self, Inbound};
use super::{BoxRead, BoxWrite, Session, StreamError};

/// After the process ended, how long output still held open (by a child it
/// left behind) is waited for.
const DRAIN: Duration = Duration::from_secs(2);
/// Stdin chunks queued for the process.
const STDIN_QUEUE: usize = 16;

/// Serves `session` (or reports why it could not start) on `socket`.
pub async fn serve(socket: WebSocket, session: Result<Session, StreamError>, v5: bool) {
    let (mut sink, mut source) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || last {
                break;
            }
        }
    });
    let status = match session {
        Ok(session) => run(session, &out, &mut source, v5).await,
        Err(e) => Some(channel::failure_status(&e.to_string())),
    };
    if let Some(status) = status {
        let body = serde_json::to_vec(&status).unwrap_or_default();
        let _ = out
            .send(Message::Binary(channel::frame(channel::ERROR, &body).into()))
            .await;
        let close = CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = out.send(Message::Close(Some(close))).await;
    }
    drop(out);
    let _ = writer.await;
}

/// The final status, or `None` when the client left.
async fn run(
    mut session: Session,
    out: &mpsc::Sender<Message>,
    source: &mut futures::stream::SplitStream<WebSocket>,
    v5: bool,
) -> Option<serde_json::Value> {
    let mut pumps = JoinSet::new();
    for (ch, reader) in [
        (channel::STDOUT, session.stdout.take()),
        (channel::STDERR, session.stderr.take()),
    ] {
        if let Some(reader) = reader {
            pumps.spawn(pump_out(ch, reader, out.clone()));
        }
    }
    let mut input = JoinSet::new();
    let mut stdin = session.stdin.take().map(|w| {
        let (tx, rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
        input.spawn(pump_in(w, rx));
        tx
    });
    let resize = session.resize.take();
    let exit = loop {
        tokio::select! {
            code = &mut session.exit => break code,
            msg = source.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => match channel::decode(&bytes, v5) {
                    Ok(Inbound::Stdin(data)) => {
                        if let Some(tx) = &stdin
                            && tx.send(Bytes::copy_from_slice(data)).await.is_err()
                        {
                            stdin = None; // the process closed its stdin
                        }
                    }
                    Ok(Inbound::StdinClosed) => stdin = None,
                    Ok(Inbound::Resize(size)) => {
                        if let Some(apply) = &resize
                            && let Err(e) = apply(size)
                        {
                            tracing::debug!("resizing the terminal: {e}");
                        }
                    }
                    Ok(Inbound::Ignored) => {}
                    Err(e) => tracing::debug!("exec stream: {e}"),
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {} // text, ping, pong
            },
        }
    };
    drop(stdin);
    // Output still buffered is sent; stdin is of no use any more.
    input.abort_all();
    let _ = tokio::time::timeout(DRAIN, async { while pumps.join_next().await.is_some() {} }).await;
    pumps.abort_all();
    Some(match exit {
        Ok(code) => channel::exit_status(code),
        Err(e) => channel::failure_status(&e.to_string()),
    })
}

async fn pump_out(ch: u8, mut reader: BoxRead, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send(Message::Binary(channel::frame(ch, &buf[..n]).into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn pump_in(mut writer: BoxWrite, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.recv().await {
        if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
