//! What every module of the crate uses from `alloc` (in a `std` build the standard prelude
//! has it already; in a `no_std` one it must be imported), and the [`crate::math::Float`]
//! methods `core` lacks without `std`. Modules glob-import it; generated code uses
//! [`crate::model::prelude`].

pub(crate) use alloc::format;
pub(crate) use alloc::string::{String, ToString};
pub(crate) use alloc::vec;
pub(crate) use alloc::vec::Vec;

#[cfg(not(feature = "std"))]
pub(crate) use crate::math::Float as _;
