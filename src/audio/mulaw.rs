//! G.711 mu-law: 8-bit logarithmic samples, as used by telephony (8 kHz).

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Encodes one linear 16-bit sample.
pub fn encode_sample(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one mu-law byte to a linear 16-bit sample.
pub fn decode_sample(byte: u8) -> i16 {
    let u = !byte as i32;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0F;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference values of the ITU-T G.711 table.
        assert_eq!(encode_sample(0), 0xFF);
        assert_eq!(encode_sample(-1), 0x7F);
        assert_eq!(encode_sample(i16::MAX), 0x80);
        assert_eq!(encode_sample(i16::MIN), 0x00);
        assert_eq!(decode_sample(0xFF), 0);
        assert_eq!(decode_sample(0x80), 32_124);
        assert_eq!(decode_sample(0x00), -32_124);
    }

    #[test]
    fn round_trip_error_is_small() {
        for s in (-32_000i32..32_000).step_by(97) {
            let back = i32::from(decode_sample(encode_sample(s as i16)));
            let tolerance = (s.abs() / 16).max(8);
            assert!((back - s).abs() <= tolerance, "{s} -> {back}");
        }
    }
}
