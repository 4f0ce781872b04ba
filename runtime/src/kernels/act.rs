//! Activation functions as kernel epilogues.

/// A pointwise activation applied in a kernel's epilogue (same definitions as the
/// compiler's IR).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// Identity.
    None,
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x · sigmoid(x)`.
    Swish,
    Sigmoid,
    /// `min(max(x, min), max)`.
    Clip { min: f32, max: f32 },
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid { alpha: f32, beta: f32 },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
}

impl Act {
    /// The scalar definition (the reference for the SIMD versions).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
            Act::Swish => x / (1.0 + (-x).exp()),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Clip { min, max } => x.max(min).min(max),
            Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }
}
