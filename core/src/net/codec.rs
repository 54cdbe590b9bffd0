//! Length-prefixed frames for the request-response protocols.
//!
//! A frame is a 4-byte big-endian length and that many bytes. The length is checked
//! against the protocol's cap *before* any buffer is allocated, and the body is decoded by
//! `wire`, which checks every count again. A bad frame is an I/O error on that stream
//! only: libp2p reports it as an inbound failure and the connection carries on.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::identity::ContactCard;
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

/// An inbound dm request as read off the wire: a valid request, or why the frame was
/// refused. Malformed frames surface as values (not I/O errors) so the actor sees them,
/// answers with no acks and counts them against the peer; libp2p would otherwise drop
/// a failed read silently.
pub(crate) type DmFrame = Result<DmRequest, String>;

/// Codec for `/bonghwa/dm/1`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DmCodec;

impl libp2p::request_response::Codec for DmCodec {
    type Protocol = StreamProtocol;
    type Request = DmFrame;
    type Response = DmResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<DmFrame>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = match read_frame(io, MAX_DM_REQUEST_BYTES).await {
            Ok(body) => body,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        Ok(DmRequest::decode(&body).map_err(|e| e.to_string()))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<DmResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_DM_RESPONSE_BYTES).await?;
        DmResponse::decode(&body).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: DmFrame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let request = request.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_frame(io, &request.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: DmResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response.encode()).await
    }
}

/// An inbound mailbox request as read off the wire, or why its frame was refused (so the
/// relay can answer with a clear refusal instead of a dropped stream).
pub(crate) type MailboxFrame = Result<MailboxRequest, String>;

/// Codec for `/bonghwa/mailbox/1`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MailboxCodec;

impl libp2p::request_response::Codec for MailboxCodec {
    type Protocol = StreamProtocol;
    type Request = MailboxFrame;
    type Response = MailboxResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<MailboxFrame>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = match read_frame(io, MAX_MAILBOX_REQUEST_BYTES).await {
            Ok(body) => body,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        Ok(MailboxRequest::decode(&body).map_err(|e| e.to_string()))
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<MailboxResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_MAILBOX_RESPONSE_BYTES).await?;
        MailboxResponse::decode(&body).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: MailboxFrame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let request = request.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_frame(io, &request.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: MailboxResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response.encode()).await
    }
}

/// The (empty) request of `/bonghwa/card/1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CardRequest;

/// Codec for `/bonghwa/card/1`: an empty frame asks, a signed card answers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CardCodec;

impl libp2p::request_response::Codec for CardCodec {
    type Protocol = StreamProtocol;
    type Request = CardRequest;
    type Response = ContactCard;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<CardRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, 0).await?;
        Ok(CardRequest)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ContactCard>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_CARD_BYTES).await?;
        wire::decode_card(&body).map_err(invalid)
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
        _: &StreamProtocol,
        io: &mut T,
        card: ContactCard,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &wire::encode_card(&card)).await
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
