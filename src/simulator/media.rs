//! Image and PDF bodies of the simulator: real JPEG, PNG and PDF files, distinct per
//! `(seed, reference, classifier)` and padded to a requested size.
//!
//! A small base image of each format is encoded once; each response copies it and adds
//! deterministic padding (JPEG `COM` segments, a private PNG chunk, a PDF stream object), so a
//! request costs a copy and some pseudo-random bytes, never an encode. No I/O here.

use std::sync::LazyLock;

use super::data::{Rng, hash};

/// Which image format a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `image/jpeg`.
    Jpeg,
    /// `image/png`.
    Png,
}

impl ImageFormat {
    /// The Content-Type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }
}

/// A small gradient, different per channel so the images are not blank.
fn pixels(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            v.push((x * 255 / w) as u8);
            v.push((y * 255 / h) as u8);
            v.push(((x + y) * 127 / (w + h)) as u8);
        }
    }
    v
}

static BASE_JPEG: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let (w, h) = (96u16, 64u16);
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(
            &pixels(w.into(), h.into()),
            w,
            h,
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("encoding a fixed in-memory JPEG cannot fail");
    out
});

static BASE_PNG: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let (w, h) = (48u32, 32u32);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().expect("PNG header to memory");
        writer
            .write_image_data(&pixels(w as usize, h as usize))
            .expect("PNG data to memory");
        writer.finish().expect("PNG end to memory");
    }
    out
});

/// The identity written into every file, so no two files of a population are equal.
fn identity(seed: u64, key: &[&[u8]]) -> (Vec<u8>, Rng) {
    let h = hash(seed, key);
    let mut id = b"jumio-export simulator ".to_vec();
    id.extend_from_slice(format!("{h:016x}").as_bytes());
    (id, Rng::new(h))
}

/// A JPEG of about `target` bytes (never smaller than the base image plus its identity).
pub fn jpeg(seed: u64, key: &[&[u8]], target: usize) -> Vec<u8> {
    const MAX_COM: usize = 65_533;
    let base = &*BASE_JPEG;
    let (id, mut rng) = identity(seed, key);
    let mut out = Vec::with_capacity(target.max(base.len() + id.len() + 8));
    out.extend_from_slice(&base[..2]); // SOI
    let com = |out: &mut Vec<u8>, payload: &[u8]| {
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(payload);
    };
    com(&mut out, &id);
    let mut missing = target.saturating_sub(base.len() + out.len() - 2);
    let mut buf = vec![0u8; MAX_COM];
    while missing > 4 {
        let n = (missing - 4).min(MAX_COM);
        rng.fill(&mut buf[..n]);
        com(&mut out, &buf[..n]);
        missing -= n + 4;
    }
    out.extend_from_slice(&base[2..]);
    out
}

/// CRC-32 (ISO-HDLC), as PNG chunks need.
fn crc32(parts: &[&[u8]]) -> u32 {
    static TABLE: LazyLock<[u32; 256]> = LazyLock::new(|| {
        let mut t = [0u32; 256];
        for (n, slot) in t.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = 0xFFFF_FFFFu32;
    for part in parts {
        for &b in *part {
            c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
    }
    c ^ 0xFFFF_FFFF
}

/// A PNG of about `target` bytes: the base image with a private ancillary chunk (`jxPd`:
/// ancillary, private, safe to copy) before `IEND`, which decoders skip.
pub fn png(seed: u64, key: &[&[u8]], target: usize) -> Vec<u8> {
    let base = &*BASE_PNG;
    let (id, mut rng) = identity(seed, key);
    let iend = base.len() - 12;
    let overhead = base.len() + 12;
    let pad = target.saturating_sub(overhead + id.len());
    let mut data = id;
    let start = data.len();
    data.resize(start + pad, 0);
    rng.fill(&mut data[start..]);
    let mut out = Vec::with_capacity(overhead + data.len());
    out.extend_from_slice(&base[..iend]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(b"jxPd");
    out.extend_from_slice(&data);
    out.extend_from_slice(&crc32(&[b"jxPd", &data]).to_be_bytes());
    out.extend_from_slice(&base[iend..]);
    out
}

/// An image of the given format.
pub fn image(format: ImageFormat, seed: u64, key: &[&[u8]], target: usize) -> Vec<u8> {
    match format {
        ImageFormat::Jpeg => jpeg(seed, key, target),
        ImageFormat::Png => png(seed, key, target),
    }
}

/// A one-page PDF 1.4 naming `title`, padded to about `target` bytes with an unreferenced
/// stream object; the xref table has the true offsets.
pub fn pdf(seed: u64, key: &[&[u8]], title: &str, target: usize) -> Vec<u8> {
    let (id, mut rng) = identity(seed, key);
    let safe: String = title
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || " -_:.".contains(*c))
        .collect();
    let content = format!(
        "BT /F1 18 Tf 72 720 Td ({safe}) Tj ET\nBT /F1 8 Tf 72 700 Td ({}) Tj ET\n",
        String::from_utf8_lossy(&id)
    );
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    let mut obj = |out: &mut Vec<u8>, body: &[u8]| {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", offsets.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    };
    obj(&mut out, b"<< /Type /Catalog /Pages 2 0 R >>");
    obj(&mut out, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
    obj(
        &mut out,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
          /Resources << /Font << /F1 5 0 R >> >> >>",
    );
    obj(
        &mut out,
        format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        )
        .as_bytes(),
    );
    obj(
        &mut out,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    );
    // The trailer below is about 200 bytes.
    let pad = target.saturating_sub(out.len() + 60 + 200);
    let mut padding = vec![0u8; pad];
    rng.fill(&mut padding);
    let mut body = format!("<< /Length {pad} >>\nstream\n").into_bytes();
    body.extend_from_slice(&padding);
    body.extend_from_slice(b"\nendstream");
    obj(&mut out, &body);
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1).as_bytes(),
    );
    for off in &offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF",
            offsets.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_is_framed_sized_and_distinct() {
        let a = jpeg(1, &[b"r", b"front"], 50_000);
        let b = jpeg(1, &[b"r", b"back"], 50_000);
        assert_eq!(&a[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(&a[a.len() - 2..], &[0xFF, 0xD9]);
        assert!(a.len().abs_diff(50_000) <= 8, "{}", a.len());
        assert_ne!(a, b);
        assert_eq!(a, jpeg(1, &[b"r", b"front"], 50_000));
        // Larger than one COM segment can hold.
        assert!(jpeg(1, &[b"x"], 300_000).len().abs_diff(300_000) <= 8);
        // Tiny targets still give a whole file.
        let t = jpeg(1, &[b"x"], 10);
        assert_eq!(&t[t.len() - 2..], &[0xFF, 0xD9]);
    }

    #[test]
    fn png_decodes_with_the_png_crate() {
        let p = png(3, &[b"r", b"face"], 40_000);
        assert_eq!(p.len(), 40_000);
        let mut reader = ::png::Decoder::new(std::io::Cursor::new(&p))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (48, 32));
        assert_ne!(p, png(3, &[b"r", b"face2"], 40_000));
    }

    #[test]
    fn pdf_has_header_trailer_and_true_xref_offsets() {
        let p = pdf(1, &[b"r"], "Document type: BS", 20_000);
        assert!(p.starts_with(b"%PDF-1.4"));
        assert!(p.ends_with(b"%%EOF"));
        assert!(p.len().abs_diff(20_000) < 400, "{}", p.len());
        let text = String::from_utf8_lossy(&p);
        let xref_at: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(p[xref_at..].starts_with(b"xref\n"));
        // Every listed offset starts its object.
        let table = std::str::from_utf8(&p[xref_at..]).unwrap();
        for (i, line) in table.lines().skip(3).take(6).enumerate() {
            let off: usize = line[..10].parse().unwrap();
            assert!(
                p[off..].starts_with(format!("{} 0 obj", i + 1).as_bytes()),
                "object {}",
                i + 1
            );
        }
        assert!(text.contains("(Document type: BS)"));
    }
}
