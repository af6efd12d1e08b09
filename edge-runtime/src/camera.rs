//! V4L2 cameras (`--camera 0` or `--camera /dev/video0`) through the pure-Rust `linuxvideo`
//! crate: capability check, format negotiation (YUYV or MJPEG, requested size and rate), mmap
//! streaming. Buffers are copied out as [`RawFrame`]s and decoded by the pipeline like a
//! recorded stream of the same format.

use std::path::{Path, PathBuf};

use crate::frame::{PixelFormat, RawFrame};
use crate::source::{stream_frame, FrameSource};
use crate::RuntimeError;

/// Which pixel format to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CameraFormat {
    /// YUYV when offered at the requested size, else MJPEG.
    #[default]
    Auto,
    /// Uncompressed YUYV 4:2:2.
    Yuyv,
    /// Motion JPEG.
    Mjpeg,
}

impl std::str::FromStr for CameraFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "yuyv" => Ok(Self::Yuyv),
            "mjpeg" | "mjpg" => Ok(Self::Mjpeg),
            _ => Err(format!("'{s}': expected auto, yuyv or mjpeg")),
        }
    }
}

/// How to open a camera.
#[derive(Debug, Clone)]
pub struct CameraConfig {
    /// The device node.
    pub device: PathBuf,
    /// Requested frame size (the driver may pick the nearest).
    pub size: Option<(u32, u32)>,
    /// Requested frame rate.
    pub fps: Option<u32>,
    /// Requested pixel format.
    pub format: CameraFormat,
}

/// `0` → `/dev/video0`; anything else is a path.
pub fn device_path(spec: &str) -> PathBuf {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        PathBuf::from(format!("/dev/video{spec}"))
    } else {
        PathBuf::from(spec)
    }
}

/// An open, streaming camera.
pub struct Camera {
    describe: String,
    device: String,
    stream: linuxvideo::stream::ReadStream,
    format: PixelFormat,
    w: u32,
    h: u32,
    next: u64,
}

fn cam_err(device: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Input {
        path: device.display().to_string(),
        reason: reason.into(),
    }
}

/// The message for an `open`/ioctl error: ENOTTY (25) means "not a V4L2 device".
fn io_reason(what: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(25) => format!("{what}: not a V4L2 device ({e})"),
        _ => format!("{what}: {e}"),
    }
}

impl Camera {
    /// Opens and starts streaming.
    pub fn open(cfg: &CameraConfig) -> Result<Self, RuntimeError> {
        use linuxvideo::format::{Format, PixFormat};
        use linuxvideo::{BufType, CapabilityFlags, Device};

        let dev_path = &cfg.device;
        let device = Device::open(dev_path).map_err(|e| cam_err(dev_path, io_reason("cannot open camera", &e)))?;
        let caps = device
            .capabilities()
            .map_err(|e| cam_err(dev_path, io_reason("cannot query the device", &e)))?;
        let flags = caps.device_capabilities();
        if !flags.contains(CapabilityFlags::VIDEO_CAPTURE) {
            return Err(cam_err(
                dev_path,
                format!(
                    "not a video capture device (driver {}, card '{}'; it may be a metadata node: try the next /dev/videoN)",
                    caps.driver(),
                    caps.card()
                ),
            ));
        }
        if !flags.contains(CapabilityFlags::STREAMING) {
            return Err(cam_err(
                dev_path,
                format!("driver {} does not support streaming I/O", caps.driver()),
            ));
        }
        let offered: Vec<linuxvideo::format::PixelFormat> = device
            .formats(BufType::VIDEO_CAPTURE)
            .filter_map(|f| f.ok().map(|f| f.pixel_format()))
            .collect();
        let has = |p: linuxvideo::format::PixelFormat| offered.contains(&p);
        let (yuyv, mjpg) = (
            linuxvideo::format::PixelFormat::YUYV,
            linuxvideo::format::PixelFormat::MJPG,
        );
        let wanted = match cfg.format {
            CameraFormat::Yuyv => vec![yuyv],
            CameraFormat::Mjpeg => vec![mjpg, linuxvideo::format::PixelFormat::JPEG],
            CameraFormat::Auto => vec![yuyv, mjpg, linuxvideo::format::PixelFormat::JPEG],
        };
        let Some(&pick) = wanted.iter().find(|p| has(**p)) else {
            let names: Vec<String> = offered
                .iter()
                .map(|p| String::from_utf8_lossy(&p.as_fourcc()).into_owned())
                .collect();
            return Err(cam_err(
                dev_path,
                format!(
                    "no supported pixel format: the camera offers [{}], edge-seg reads YUYV and MJPEG",
                    names.join(", ")
                ),
            ));
        };
        let Format::VideoCapture(current) = device
            .format(BufType::VIDEO_CAPTURE)
            .map_err(|e| cam_err(dev_path, io_reason("cannot read the format", &e)))?
        else {
            return Err(cam_err(dev_path, "the device reports no capture format"));
        };
        let (w, h) = cfg.size.unwrap_or((current.width(), current.height()));
        let capture = device
            .video_capture(PixFormat::new(w, h, pick))
            .map_err(|e| cam_err(dev_path, io_reason("format negotiation failed", &e)))?;
        let got = capture.format();
        let (gw, gh, gpf, gbpl) = (got.width(), got.height(), got.pixel_format(), got.bytes_per_line());
        let format = if gpf == yuyv {
            PixelFormat::Yuyv
        } else if gpf == mjpg || gpf == linuxvideo::format::PixelFormat::JPEG {
            PixelFormat::Mjpeg
        } else {
            return Err(cam_err(
                dev_path,
                format!(
                    "the driver switched to pixel format {}, which edge-seg does not read",
                    String::from_utf8_lossy(&gpf.as_fourcc())
                ),
            ));
        };
        if format == PixelFormat::Yuyv && gbpl != gw * 2 {
            return Err(cam_err(
                dev_path,
                format!("padded YUYV rows ({} bytes for {} pixels) are not supported", gbpl, gw),
            ));
        }
        let mut rate = String::new();
        if let Some(fps) = cfg.fps {
            // not every driver supports setting the interval; a failure is not fatal
            match capture.set_frame_interval(linuxvideo::Fract::new(1, fps.max(1))) {
                Ok(f) => rate = format!(" at {}/{} s", f.numerator(), f.denominator()),
                Err(e) => tracing::warn!("{}: cannot set {fps} FPS: {e}", dev_path.display()),
            }
        }
        let stream = capture
            .into_stream()
            .map_err(|e| cam_err(dev_path, io_reason("cannot start streaming", &e)))?;
        Ok(Self {
            describe: format!(
                "{} ({} '{}', {} {}x{}{rate})",
                dev_path.display(),
                caps.driver(),
                caps.card(),
                format.name(),
                gw,
                gh
            ),
            device: dev_path.display().to_string(),
            stream,
            format,
            w: gw,
            h: gh,
            next: 0,
        })
    }
}

impl FrameSource for Camera {
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn is_live(&self) -> bool {
        true
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        loop {
            let (data, error) = self
                .stream
                .dequeue(|buf| Ok((buf.to_vec(), buf.is_error())))
                .map_err(|e| RuntimeError::Input {
                    path: self.device.clone(),
                    reason: format!("capture failed (camera unplugged?): {e}"),
                })?;
            if error || data.is_empty() {
                tracing::debug!("{}: dropping a corrupted buffer", self.device);
                continue;
            }
            self.next += 1;
            return Ok(Some(stream_frame(
                &self.device,
                self.next - 1,
                self.format,
                self.w,
                self.h,
                data,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_numbers_map_to_device_nodes() {
        assert_eq!(device_path("0"), PathBuf::from("/dev/video0"));
        assert_eq!(device_path("12"), PathBuf::from("/dev/video12"));
        assert_eq!(device_path("/dev/video2"), PathBuf::from("/dev/video2"));
    }

    #[test]
    fn missing_and_non_v4l2_devices_are_clear_errors() {
        let cfg = |p: &str| CameraConfig {
            device: p.into(),
            size: None,
            fps: None,
            format: CameraFormat::Auto,
        };
        let e = Camera::open(&cfg("/dev/video-does-not-exist"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("/dev/video-does-not-exist: cannot open camera:"), "{e}");
        let e = Camera::open(&cfg("/dev/null")).err().unwrap().to_string();
        assert!(e.starts_with("/dev/null:") && e.contains("not a V4L2 device"), "{e}");
    }
}
