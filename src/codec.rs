//! The protobuf codec of zkcoord's gRPC services: prost, with small initial buffers.
//!
//! tonic starts every call's encode and decode buffers at 8 KiB. A lease holds a KeepAlive
//! stream (a decode and an encode buffer) and often an Observe or Campaign stream for hours, so
//! at tens of thousands of leases those buffers are most of an instance's memory. zkcoord's
//! messages are far smaller (a heartbeat is tens of bytes); buffers still grow for a large
//! message, such as a Lock request on many keys.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode and decode buffers.
const BUFFER_SIZE: usize = 512;
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
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
