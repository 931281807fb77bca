//! The protobuf codec of zkcoord's gRPC services: prost, with small initial buffers.
//!
//! tonic starts every call's encode and decode buffers at 8 KiB. A lease holds a KeepAlive
//! stream (a decode and an encode buffer) and often an Observe or Campaign stream for hours, so
//! at tens of thousands of leases those buffers are most of an instance's memory. zkcoord's
//! messages are far smaller (a heartbeat is tens of bytes); buffers still grow for a large
//! message, such as a Lock request on many keys.
//!
//! prost answers a message it cannot decode with INTERNAL (gRPC's status code guide says so of
//! a server's own parse errors); for zkcoord that is the client's bad input, not a bug, so the
//! decoder answers [`Error::Undecodable`] (INVALID_ARGUMENT, a fixed message). The generated
//! clients of this crate (used by tests; `zkcoord-client` has its own) share the codec, so they
//! would report an undecodable response the same way.

use std::marker::PhantomData;

use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::Error;

/// Initial size of a call's encode and decode buffers: a heartbeat or its answer without
/// leaderships fits (a few dozen bytes); larger messages (an Observe event with its leader,
/// ~100 to 200 bytes) grow the buffer once. An idle lease holds three (KeepAlive's decode and
/// encode, Observe's or Campaign's encode): bench scenario 7 at 10,000 leases + streams used
/// 8.6–8.7 KiB each with 256-byte buffers, 8.4 with 128, 8.3 with 64.
const BUFFER_SIZE: usize = 128;
/// How much an encoder buffers before yielding (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] initial buffers; used by the generated code.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// Decodes `U` with prost; a message that is not a valid `U` is [`Error::Undecodable`].
#[derive(Debug)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|err| {
            tracing::debug!(error = %err, "undecodable message");
            Error::Undecodable.into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
