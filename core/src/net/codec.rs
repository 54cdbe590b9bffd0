//! Length-prefixed frames for the request-response protocols.
//!
//! A frame is a 4-byte big-endian length and that many bytes. The length is checked
//! against the protocol's cap *before* any buffer is allocated, and the body is decoded by
//! `wire`, which checks every count again. A bad frame is an I/O error on that stream
//! only: libp2p reports it as an inbound failure and the connection carries on.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::identity::{ContactCard, SignedPrekey};
use crate::wire::group::{MAX_SYNC_FRAME_BYTES, SyncRequest, SyncResponse};
use crate::wire::{
    self, DmRequest, DmResponse, MAX_CARD_BYTES, MAX_DM_REQUEST_BYTES, MAX_DM_RESPONSE_BYTES,
    MAX_MAILBOX_REQUEST_BYTES, MAX_MAILBOX_RESPONSE_BYTES, MailboxRequest, MailboxResponse,
};

/// Reads one frame of at most `limit` bytes.
pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame length overflows"))?;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {limit}"),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one frame and closes the write side.
pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    body: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

fn invalid(e: wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A protocol whose request and response each travel as one length-prefixed frame,
/// encoded and checked by `wire`.
pub(crate) trait Framed: Send + 'static {
    /// What the requester sends.
    type Request: Send;
    /// What the responder answers.
    type Response: Send;
    /// Largest request frame.
    const REQUEST_LIMIT: usize;
    /// Largest response frame.
    const RESPONSE_LIMIT: usize;
    fn encode_request(request: &Self::Request) -> Vec<u8>;
    fn decode_request(bytes: &[u8]) -> Result<Self::Request, wire::WireError>;
    fn encode_response(response: &Self::Response) -> Vec<u8>;
    fn decode_response(bytes: &[u8]) -> Result<Self::Response, wire::WireError>;
}

/// The request-response codec of a [`Framed`] protocol. An inbound request is read off the
/// wire as a valid request or why its frame was refused: malformed frames surface as values
/// (not I/O errors) so the actor sees them, answers, and counts them against the peer;
/// libp2p would otherwise drop a failed read silently.
pub(crate) struct FramedCodec<P>(PhantomData<fn() -> P>);

impl<P> Clone for FramedCodec<P> {
    fn clone(&self) -> Self {
        Self(PhantomData)
    }
}

impl<P> Default for FramedCodec<P> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<P: Framed> libp2p::request_response::Codec for FramedCodec<P> {
    type Protocol = StreamProtocol;
    type Request = Result<P::Request, String>;
    type Response = P::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = match read_frame(io, P::REQUEST_LIMIT).await {
            Ok(body) => body,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        Ok(P::decode_request(&body).map_err(|e| e.to_string()))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<P::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, P::RESPONSE_LIMIT).await?;
        P::decode_response(&body).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let request = request.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_frame(io, &P::encode_request(&request)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: P::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &P::encode_response(&response)).await
    }
}

/// `/bonghwa/dm/1`: push sealed envelopes, get per-envelope acks.
pub(crate) struct Dm;

impl Framed for Dm {
    type Request = DmRequest;
    type Response = DmResponse;
    const REQUEST_LIMIT: usize = MAX_DM_REQUEST_BYTES;
    const RESPONSE_LIMIT: usize = MAX_DM_RESPONSE_BYTES;
    fn encode_request(request: &DmRequest) -> Vec<u8> {
        request.encode()
    }
    fn decode_request(bytes: &[u8]) -> Result<DmRequest, wire::WireError> {
        DmRequest::decode(bytes)
    }
    fn encode_response(response: &DmResponse) -> Vec<u8> {
        response.encode()
    }
    fn decode_response(bytes: &[u8]) -> Result<DmResponse, wire::WireError> {
        DmResponse::decode(bytes)
    }
}

/// `/bonghwa/mailbox/1`: deposit, fetch and ack held mail.
pub(crate) struct Mailbox;

impl Framed for Mailbox {
    type Request = MailboxRequest;
    type Response = MailboxResponse;
    const REQUEST_LIMIT: usize = MAX_MAILBOX_REQUEST_BYTES;
    const RESPONSE_LIMIT: usize = MAX_MAILBOX_RESPONSE_BYTES;
    fn encode_request(request: &MailboxRequest) -> Vec<u8> {
        request.encode()
    }
    fn decode_request(bytes: &[u8]) -> Result<MailboxRequest, wire::WireError> {
        MailboxRequest::decode(bytes)
    }
    fn encode_response(response: &MailboxResponse) -> Vec<u8> {
        response.encode()
    }
    fn decode_response(bytes: &[u8]) -> Result<MailboxResponse, wire::WireError> {
        MailboxResponse::decode(bytes)
    }
}

/// `/bonghwa/sync/1`: group history repair (reconcile, fetch, push).
pub(crate) struct Sync;

impl Framed for Sync {
    type Request = SyncRequest;
    type Response = SyncResponse;
    const REQUEST_LIMIT: usize = MAX_SYNC_FRAME_BYTES;
    const RESPONSE_LIMIT: usize = MAX_SYNC_FRAME_BYTES;
    fn encode_request(request: &SyncRequest) -> Vec<u8> {
        request.encode()
    }
    fn decode_request(bytes: &[u8]) -> Result<SyncRequest, wire::WireError> {
        SyncRequest::decode(bytes)
    }
    fn encode_response(response: &SyncResponse) -> Vec<u8> {
        response.encode()
    }
    fn decode_response(bytes: &[u8]) -> Result<SyncResponse, wire::WireError> {
        SyncResponse::decode(bytes)
    }
}

/// Codec for `/bonghwa/sync/1`.
pub(crate) type SyncCodec = FramedCodec<Sync>;
/// An inbound sync request, or why its frame was refused.
pub(crate) type SyncFrame = Result<SyncRequest, String>;

/// Codec for `/bonghwa/dm/1`.
pub(crate) type DmCodec = FramedCodec<Dm>;
/// An inbound dm request, or why its frame was refused.
pub(crate) type DmFrame = Result<DmRequest, String>;
/// Codec for `/bonghwa/mailbox/1`.
pub(crate) type MailboxCodec = FramedCodec<Mailbox>;
/// An inbound mailbox request, or why its frame was refused (answered with a clear refusal).
pub(crate) type MailboxFrame = Result<MailboxRequest, String>;

/// The (empty) request of `/bonghwa/card/1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CardRequest;

/// The answer to a card request: the signed card, and on `/bonghwa/card/2` the signed
/// prekey that lets the asker start a session with us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CardAnswer {
    /// The peer's card.
    pub(crate) card: ContactCard,
    /// Its signed prekey (`None` from builds before sessions, on `/bonghwa/card/1`).
    pub(crate) prekey: Option<SignedPrekey>,
}

/// Codec for `/bonghwa/card/2` and `/bonghwa/card/1`: an empty frame asks, a signed card
/// answers — followed on version 2 by the signed prekey (version 1 stays as it was, for
/// builds before sessions).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CardCodec;

impl libp2p::request_response::Codec for CardCodec {
    type Protocol = StreamProtocol;
    type Request = CardRequest;
    type Response = CardAnswer;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<CardRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, 0).await?;
        Ok(CardRequest)
    }

    async fn read_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<CardAnswer>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_CARD_BYTES).await?;
        if *protocol == super::CARD_PROTOCOL_V1 {
            let card = wire::decode_card(&body).map_err(invalid)?;
            return Ok(CardAnswer { card, prekey: None });
        }
        let (card, prekey) = wire::decode_card_and_prekey(&body).map_err(invalid)?;
        Ok(CardAnswer { card, prekey })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: CardRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &[]).await
    }

    async fn write_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        answer: CardAnswer,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut body = wire::encode_card(&answer.card);
        if *protocol != super::CARD_PROTOCOL_V1
            && let Some(prekey) = &answer.prekey
        {
            body.extend(postcard::to_stdvec(prekey).unwrap_or_default());
        }
        write_frame(io, &body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn frame_limit_is_checked_before_allocating() {
        let mut claims_4gib = Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        let err = read_frame(&mut claims_4gib, MAX_DM_REQUEST_BYTES)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut short = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        assert!(read_frame(&mut short, 100).await.is_err());
        let mut ok = Cursor::new(vec![0, 0, 0, 2, 7, 8]);
        assert_eq!(read_frame(&mut ok, 100).await.unwrap(), vec![7, 8]);
    }
}
