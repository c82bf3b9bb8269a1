//! Edge Hive functions in Rust.
//!
//! ```ignore
//! use edge_hive_wasm::{edge_function, Error, Request, Response};
//!
//! #[edge_function]
//! fn handler(req: Request) -> Result<Response, Error> {
//!     Ok(Response::text(format!("{} {}", req.method(), req.path())))
//! }
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasi` (`edge-hive function build <folder>` does). The attribute
//! adds the guest ABI v1 exports (`hive_abi_v1`, `hive_alloc`, `hive_free`, `hive_handle`; see
//! docs/abi.md in Edge Hive). Off wasm it adds nothing, so handlers are unit-testable with `cargo test`.
//!
//! What the SDK does for you: a malformed request envelope gets a 400, an `Err` becomes a JSON error
//! response, and a response header the host would refuse is dropped with a warning in the log. A panic
//! cannot be caught (wasm builds abort on panic): the message goes to the function's log and the
//! invocation fails with a 502.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

pub use edge_hive_wasm_macros::edge_function;

const MAX_HEADERS: usize = 256;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 16 * 1024;

/// The request header carrying the verified JWT claims; see [`Request::auth_claims`].
pub const AUTH_CLAIMS_HEADER: &str = "x-hive-auth-claims";

/// The incoming HTTP request. Text fields hold the bytes as received; the rare invalid UTF-8 in them
/// is replaced with U+FFFD. The body is raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request to hand to a handler in a unit test.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Test builder: sets the query string (without the `?`).
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = query.into();
        self
    }

    /// Test builder: appends a header (names arrive lowercase from the host).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Test builder: sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The method as sent, e.g. `"POST"` (not normalized).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The raw request path, e.g. `"/api/v1/edge/hello"`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string without the `?`; empty when there is none.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (!pair.is_empty() && percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case), in arrival order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The claims of the caller's JWT as compact JSON (parse it with serde_json), set by the server
    /// after it verified the token (`auth.mode = "jwt"`); the server drops any copy a client sent.
    /// `None` when the function has no verified token (public or API-key functions).
    pub fn auth_claims(&self) -> Option<&str> {
        self.header(AUTH_CLAIMS_HEADER)
    }

    /// All headers in arrival order, repeats included; names are lowercase.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The body, binary-safe.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text; a 400 error when it is not.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|_| Error::bad_request("the request body is not valid UTF-8"))
    }

    /// The body parsed as JSON into `T`; a 400 error when it does not parse.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }

    /// Decodes a request envelope (docs/abi.md); `None` when it is malformed.
    fn decode(buf: &[u8]) -> Option<Request> {
        let mut r = Reader { buf, pos: 0 };
        let method = lossy(r.field()?);
        let path = lossy(r.field()?);
        let query = lossy(r.field()?);
        let count = r.u32()? as usize;
        // Each header takes at least 8 bytes, so a lying count can't reserve a huge Vec.
        if count > (buf.len() - r.pos) / 8 {
            return None;
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            headers.push((lossy(r.field()?), lossy(r.field()?)));
        }
        let body = r.field()?.to_vec();
        (r.pos == buf.len()).then(|| Request {
            method,
            path,
            query,
            headers,
            body,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(4)?)?;
        self.pos += 4;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The HTTP response a handler returns. Builders take and return `self`:
/// `Response::new(201).header("location", "/items/7").body("created")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with this status (100..=599).
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// 200 with `content-type: text/plain; charset=utf-8`.
    pub fn text(text: impl Into<String>) -> Self {
        Response::new(200)
            .header("content-type", "text/plain; charset=utf-8")
            .body(text.into())
    }

    /// 200 with `content-type: application/json` and `value` serialized as compact JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("cannot serialize the response: {e}")))?;
        Ok(Response::new(200)
            .header("content-type", "application/json")
            .body(body))
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Appends a header; a repeated name sends the header twice. A header the host would refuse (name
    /// not an HTTP token of 1 to 256 bytes, value over 16 KiB or with CR, LF or NUL, more than 256
    /// headers) is dropped with a warning in the function's log.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        let why = if self.headers.len() >= MAX_HEADERS {
            Some("more than 256 headers")
        } else if name.is_empty()
            || name.len() > MAX_HEADER_NAME
            || !name.bytes().all(is_token_byte)
        {
            Some("the name is not an HTTP token of 1 to 256 bytes")
        } else if value.len() > MAX_HEADER_VALUE {
            Some("the value is longer than 16 KiB")
        } else if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            Some("the value contains CR, LF or NUL")
        } else {
            None
        };
        match why {
            Some(why) => {
                // Pieces, not format!("{:?}"): Debug of a str brings Unicode tables into every module.
                let mut line = String::from("dropped response header ");
                push_json_string(&mut line, &name.chars().take(64).collect::<String>());
                line.push_str(": ");
                line.push_str(why);
                hive_log(Level::Warn, &line);
            }
            None => self.headers.push((name, value)),
        }
        self
    }

    /// Sets the body (replacing any earlier one).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers set so far, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The response envelope (docs/abi.md).
    fn encode(&self) -> Vec<u8> {
        let size = 12
            + self
                .headers
                .iter()
                .map(|(n, v)| 8 + n.len() + v.len())
                .sum::<usize>()
            + self.body.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&u32::from(self.status).to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            put_field(&mut out, name.as_bytes());
            put_field(&mut out, value.as_bytes());
        }
        put_field(&mut out, &self.body);
        out
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl From<Error> for Response {
    fn from(e: Error) -> Self {
        e.into_response()
    }
}

/// A failed request: becomes a JSON response `{"error": code, "message": message}` with its status.
///
/// `?` turns any `std::error::Error` into a 500; pick another status with [`Error::new`] or the
/// shorthands, and a stable code with [`Error::with_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: u16,
    code: Cow<'static, str>,
    message: String,
}

impl Error {
    /// An error with this HTTP status (400..=599 makes sense) and a code derived from it.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        let code = match status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "payload_too_large",
            422 => "unprocessable_entity",
            429 => "too_many_requests",
            500 => "internal_error",
            503 => "unavailable",
            _ => "error",
        };
        Error {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(400, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(404, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(500, message)
    }

    /// Replaces the `error` code, e.g. `"invalid_email"`.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = code.into();
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn into_response(self) -> Response {
        let mut body = String::with_capacity(32 + self.code.len() + self.message.len());
        body.push_str("{\"error\":");
        push_json_string(&mut body, &self.code);
        body.push_str(",\"message\":");
        push_json_string(&mut body, &self.message);
        body.push('}');
        Response::new(self.status)
            .header("content-type", "application/json")
            .body(body)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

// Like anyhow::Error, Error itself is not a std::error::Error, which is what allows this blanket impl.
impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::internal(e.to_string())
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(char::from(b"0123456789abcdef"[c as usize >> 4]));
                out.push(char::from(b"0123456789abcdef"[c as usize & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Log levels of `hive.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

/// Writes one line to the server log, tagged with the function (the `hive.log` import). Off wasm
/// it goes to stderr.
pub fn hive_log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "hive")]
        extern "C" {
            #[link_name = "log"]
            fn host_log(level: i32, ptr: *const u8, len: usize);
        }
        // SAFETY: the host only reads `len` bytes at `ptr`, which `message` owns.
        unsafe { host_log(level as i32, message.as_ptr(), message.len()) }
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{}] {}", format!("{level:?}").to_lowercase(), message);
}

/// `log::info!("hello {}", name)` and friends: `format!` arguments, one log line per call.
pub mod log {
    pub use crate::{
        __hive_log_debug as debug, __hive_log_error as error, __hive_log_info as info,
        __hive_log_warn as warn,
    };
    pub use crate::{hive_log, Level};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hive_log_debug {
    ($($arg:tt)+) => { $crate::hive_log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hive_log_info {
    ($($arg:tt)+) => { $crate::hive_log($crate::Level::Info, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hive_log_warn {
    ($($arg:tt)+) => { $crate::hive_log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hive_log_error {
    ($($arg:tt)+) => { $crate::hive_log($crate::Level::Error, &::std::format!($($arg)+)) };
}

/// Wall-clock time as most functions need it, without a date crate (chrono adds about 45 KB to a module).
///
/// ```ignore
/// let stamp = edge_hive_wasm::time::rfc3339(edge_hive_wasm::time::now()); // "2026-11-24T19:40:00Z"
/// ```
pub mod time {
    /// Seconds since the Unix epoch, from the WASI realtime clock (the `clocks` permission); 0 if the
    /// clock fails.
    #[cfg(target_arch = "wasm32")]
    pub fn now() -> i64 {
        // The WASI call itself: std's SystemTime::now() unwraps it, which brings the Debug formatting of
        // every WASI error code and about 7 KB into the module.
        #[link(wasm_import_module = "wasi_snapshot_preview1")]
        extern "C" {
            fn clock_time_get(id: u32, precision: u64, time: *mut u64) -> u16;
        }
        let mut ns = 0u64;
        // SAFETY: the host writes one u64 at `time`; 0 is the realtime clock.
        match unsafe { clock_time_get(0, 1, &mut ns) } {
            0 => (ns / 1_000_000_000) as i64,
            _ => 0,
        }
    }

    /// Seconds since the Unix epoch, from the system clock (off wasm, for unit tests).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn now() -> i64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// `secs` (Unix seconds, clamped to the years 1970 to 9999) as RFC 3339 UTC to the second, e.g.
    /// `"2026-11-24T19:40:00Z"`.
    pub fn rfc3339(secs: i64) -> String {
        let secs = secs.clamp(0, 253_402_300_799);
        // The civil date of a day count: Howard Hinnant's civil_from_days.
        let z = secs / 86_400 + 719_468;
        let (era, sod) = (z / 146_097, secs % 86_400);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let parts = [
            yoe + era * 400 + i64::from(month <= 2),
            month,
            doy - (153 * mp + 2) / 5 + 1,
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
        ];
        let mut out = *b"0000-00-00T00:00:00Z";
        for (i, mut v) in parts.into_iter().enumerate() {
            let (end, width) = if i == 0 { (4, 4) } else { (3 * i + 4, 2) };
            for digit in out[end - width..end].iter_mut().rev() {
                *digit = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        out.iter().map(|&b| b as char).collect()
    }
}

// ---- outbound HTTP and key-value stores (ABI v1 revision 2: docs/abi.md) ------------------------------

/// The host's I/O calls and what fetch and KV share: records out, result records back, every length in
/// them checked (a host that lies gets an `invalid_result` error, never a read out of bounds).
mod hostio {
    #![allow(dead_code)] // some of it is for wasm32 only

    use super::{put_field, Reader};
    use std::borrow::Cow;

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "hive")]
    extern "C" {
        #[link_name = "fetch_send"]
        pub fn fetch_send(ptr: *const u8, len: usize) -> i32;
        #[link_name = "fetch_wait"]
        pub fn fetch_wait(handle: i32) -> i64;
        #[link_name = "kv"]
        pub fn kv(ptr: *const u8, len: usize) -> i64;
        #[link_name = "result_read"]
        pub fn result_read(handle: i32, ptr: *mut u8, len: usize) -> i32;
    }

    /// A failed call: the host's code and message, or one of the SDK's own.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Failure {
        pub code: Cow<'static, str>,
        pub message: String,
    }

    pub fn failure(code: &'static str, message: &str) -> Failure {
        Failure {
            code: Cow::Borrowed(code),
            message: message.to_string(),
        }
    }

    pub fn invalid() -> Failure {
        failure("invalid_result", "the host sent a malformed result record")
    }

    pub fn pending() -> Failure {
        failure(
            "too_many_pending",
            "64 results are not read yet: wait for some first",
        )
    }

    pub fn no_io() -> Failure {
        failure(
            "no_io",
            "fetch and KV need the Edge Hive host (a wasm32 build)",
        )
    }

    /// Appends a length-prefixed field; `None` when it does not fit a u32.
    pub fn field(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
        u32::try_from(bytes.len()).ok()?;
        put_field(out, bytes);
        Some(())
    }

    /// (handle, result length) from a packed i64; `None` for -1 (or any negative value).
    pub fn split(packed: i64) -> Option<(i32, u32)> {
        if packed < 0 {
            return None;
        }
        Some(((packed as u64 >> 32) as i32, packed as u32))
    }

    /// The result record of `handle`, `len` bytes as announced, copied out of the host.
    #[cfg(target_arch = "wasm32")]
    pub fn take(handle: i32, len: u32) -> Result<Vec<u8>, Failure> {
        if handle < 1 {
            return Err(invalid());
        }
        let mut buf = Vec::new();
        if buf.try_reserve_exact(len as usize).is_err() {
            // SAFETY: a zero-length read writes nothing; it frees the host's slot.
            unsafe { result_read(handle, std::ptr::null_mut(), 0) };
            return Err(failure("out_of_memory", "no memory for the host's result"));
        }
        buf.resize(len as usize, 0);
        // SAFETY: the host writes at most `len` bytes into `buf`, which owns that many.
        let n = unsafe { result_read(handle, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(failure(
                "unknown_handle",
                "the host has no result for this handle",
            ));
        }
        if n as u32 != len {
            return Err(invalid()); // never trust more (or less) than both sides agree on
        }
        Ok(buf)
    }

    /// Checks the record's kind: a reader after it for an ok result, the host's error otherwise.
    pub(crate) fn ok(record: &[u8]) -> Result<Reader<'_>, Failure> {
        let mut r = Reader {
            buf: record,
            pos: 0,
        };
        match r.u32().ok_or_else(invalid)? {
            0 => Ok(r),
            1 => {
                let code = r.field().ok_or_else(invalid)?;
                let message = r.field().ok_or_else(invalid)?;
                if code.is_empty() || r.pos != record.len() {
                    return Err(invalid());
                }
                Err(Failure {
                    code: Cow::Owned(String::from_utf8_lossy(code).into_owned()),
                    message: String::from_utf8_lossy(message).into_owned(),
                })
            }
            _ => Err(invalid()),
        }
    }

    pub(crate) fn end(r: &Reader<'_>) -> Result<(), Failure> {
        if r.pos == r.buf.len() {
            Ok(())
        } else {
            Err(invalid())
        }
    }

    pub(crate) fn u64(r: &mut Reader<'_>) -> Option<u64> {
        let lo = r.u32()? as u64;
        let hi = r.u32()? as u64;
        Some(hi << 32 | lo)
    }
}

macro_rules! io_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            code: Cow<'static, str>,
            message: String,
        }

        impl $name {
            /// A stable snake_case code: the host's (docs/abi.md) or the SDK's own (`too_many_pending`,
            /// `unknown_handle`, `invalid_argument`, `out_of_memory`, `invalid_result`, `no_io`).
            pub fn code(&self) -> &str {
                &self.code
            }

            pub fn message(&self) -> &str {
                &self.message
            }
        }

        impl From<crate::hostio::Failure> for $name {
            fn from(f: crate::hostio::Failure) -> Self {
                $name { code: f.code, message: f.message }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}: {}", self.code, self.message)
            }
        }

        impl std::error::Error for $name {}
    };
}

/// Outbound HTTP to the hosts the manifest grants (`"allowed_hosts"`; default deny).
///
/// ```ignore
/// use edge_hive_wasm::fetch::{self, Request};
///
/// let res = edge_hive_wasm::fetch(Request::post("https://api.example.com/v1/send")
///     .header("content-type", "application/json")
///     .body(r#"{"to":"a@example.com"}"#))?;
/// if res.status() != 200 { /* ... */ }
/// ```
///
/// A call blocks the guest until the upstream answers; the worker keeps serving meanwhile. To run
/// several at once, [`Request::send`] each and [`Pending::wait`] for them.
pub mod fetch {
    use super::hostio;
    use std::borrow::Cow;
    use std::fmt;

    /// At most this many headers in one request.
    pub const MAX_HEADERS: usize = 256;

    io_error!(
        /// Why a fetch has no response: a refused host, a limit, a timeout, ... (`code()`).
        FetchError
    );

    /// An outbound request. Builders take and return `self`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Request {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Request {
        pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
            Request {
                method: method.into(),
                url: url.into(),
                headers: Vec::new(),
                body: Vec::new(),
            }
        }

        pub fn get(url: impl Into<String>) -> Self {
            Request::new("GET", url)
        }

        pub fn post(url: impl Into<String>) -> Self {
            Request::new("POST", url)
        }

        /// Appends a header; a repeated name sends the header twice.
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }

        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
            self.body = body.into();
            self
        }

        /// `content-type: application/json` and `value` serialized as the body.
        #[cfg(feature = "json")]
        pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, serde_json::Error> {
            let body = serde_json::to_vec(value)?;
            Ok(self.header("content-type", "application/json").body(body))
        }

        pub fn method(&self) -> &str {
            &self.method
        }

        pub fn url(&self) -> &str {
            &self.url
        }

        pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
        }

        pub fn body_bytes(&self) -> &[u8] {
            &self.body
        }

        /// The request record (docs/abi.md).
        fn encode(&self) -> Result<Vec<u8>, FetchError> {
            if self.headers.len() > MAX_HEADERS {
                return Err(hostio::failure("invalid_argument", "a fetch has at most 256 headers").into());
            }
            let too_large = || FetchError::from(hostio::failure("request_too_large", "the fetch request is larger than 4 GiB"));
            let size = self
                .headers
                .iter()
                .fold(16 + self.method.len() + self.url.len(), |n, (k, v)| {
                    n.saturating_add(8 + k.len()).saturating_add(v.len())
                })
                .saturating_add(self.body.len());
            let mut out = Vec::new();
            out.try_reserve_exact(size)
                .map_err(|_| FetchError::from(hostio::failure("out_of_memory", "no memory for the fetch request")))?;
            let method: &str = if self.method.is_empty() { "GET" } else { &self.method };
            hostio::field(&mut out, method.as_bytes()).ok_or_else(too_large)?;
            hostio::field(&mut out, self.url.as_bytes()).ok_or_else(too_large)?;
            out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
            for (name, value) in &self.headers {
                hostio::field(&mut out, name.as_bytes()).ok_or_else(too_large)?;
                hostio::field(&mut out, value.as_bytes()).ok_or_else(too_large)?;
            }
            hostio::field(&mut out, &self.body).ok_or_else(too_large)?;
            if u32::try_from(out.len()).is_err() {
                return Err(too_large());
            }
            Ok(out)
        }

        /// Starts the request and returns at once; [`Pending::wait`] for the response.
        pub fn send(&self) -> Result<Pending, FetchError> {
            let record = self.encode()?;
            #[cfg(target_arch = "wasm32")]
            {
                // SAFETY: the host only reads the record's bytes during the call.
                let handle = unsafe { hostio::fetch_send(record.as_ptr(), record.len()) };
                if handle < 1 {
                    return Err(hostio::pending().into());
                }
                Ok(Pending { handle })
            }
            #[cfg(not(target_arch = "wasm32"))]
            {
                drop(record);
                Err(hostio::no_io().into())
            }
        }
    }

    /// A request that was started: wait for it (before the handler returns; an unread result is
    /// dropped then, and it counts against the 64 a guest may hold).
    #[derive(Debug, PartialEq, Eq)]
    #[must_use = "a started request's response is read with wait()"]
    pub struct Pending {
        handle: i32,
    }

    impl Pending {
        /// The host's handle for this request (what [`wait_any`] reports).
        pub fn id(&self) -> i32 {
            self.handle
        }

        /// Blocks until the response is in.
        pub fn wait(self) -> Result<Response, FetchError> {
            wait_handle(self.handle).1
        }
    }

    /// Blocks until the first of the pending requests (all started, not yet waited for) is done: its
    /// [`Pending::id`] and its result; `None` when nothing is pending. Drop that request's `Pending`.
    pub fn wait_any() -> Option<(i32, Result<Response, FetchError>)> {
        match wait_handle(0) {
            (0, Err(e)) if e.code() == "unknown_handle" => None,
            (id, result) => Some((id, result)),
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn wait_handle(handle: i32) -> (i32, Result<Response, FetchError>) {
        // SAFETY: a plain call; the host validates the handle.
        let packed = unsafe { hostio::fetch_wait(handle) };
        let (got, len) = match hostio::split(packed) {
            None => return (handle, Err(hostio::failure("unknown_handle", "no such pending fetch").into())),
            Some(split) => split,
        };
        if got < 1 || (handle != 0 && got != handle) {
            return (handle, Err(hostio::invalid().into()));
        }
        (got, hostio::take(got, len).and_then(|record| Response::decode(&record)).map_err(FetchError::from))
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn wait_handle(handle: i32) -> (i32, Result<Response, FetchError>) {
        let _ = handle;
        (0, Err(hostio::no_io().into()))
    }

    /// An upstream's response.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        pub fn status(&self) -> u16 {
            self.status
        }

        /// The first value of header `name` (any case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// Every value of header `name` (any case), in order.
        pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
            self.headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// Every header as the upstream sent it, in order.
        pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
        }

        pub fn body(&self) -> &[u8] {
            &self.body
        }

        pub fn into_body(self) -> Vec<u8> {
            self.body
        }

        /// The body as text; invalid UTF-8 becomes U+FFFD.
        pub fn text(&self) -> Cow<'_, str> {
            String::from_utf8_lossy(&self.body)
        }

        /// The body parsed as JSON into `T`.
        #[cfg(feature = "json")]
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
            serde_json::from_slice(&self.body)
        }

        /// A fetch result record (docs/abi.md): the response, or the error it carries.
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        fn decode(record: &[u8]) -> Result<Response, hostio::Failure> {
            let mut r = hostio::ok(record)?;
            let status = r.u32().ok_or_else(hostio::invalid)?;
            let status = u16::try_from(status).map_err(|_| hostio::invalid())?;
            let count = r.u32().ok_or_else(hostio::invalid)? as usize;
            // Each header takes at least 8 bytes, so a lying count can't reserve a huge Vec.
            if count > (record.len() - r.pos) / 8 {
                return Err(hostio::invalid());
            }
            let mut headers = Vec::with_capacity(count);
            for _ in 0..count {
                let name = r.field().ok_or_else(hostio::invalid)?;
                let value = r.field().ok_or_else(hostio::invalid)?;
                headers.push((super::lossy(name), super::lossy(value)));
            }
            let body = r.field().ok_or_else(hostio::invalid)?.to_vec();
            hostio::end(&r)?;
            Ok(Response { status, headers, body })
        }
    }

    /// One request, start to finish: `req.send()?.wait()`.
    pub fn fetch(req: Request) -> Result<Response, FetchError> {
        req.send()?.wait()
    }

    /// GET `url` with no headers.
    pub fn get(url: impl Into<String>) -> Result<Response, FetchError> {
        fetch(Request::get(url))
    }
}

pub use fetch::{fetch, FetchError};

/// Key-value stores the manifest grants by name (`"kv": ["default"]`). Keys (1 to 512 bytes) and
/// values (up to 1 MiB) are bytes: `&str`, `String`, `&[u8]` and `Vec<u8>` all work.
///
/// ```ignore
/// use edge_hive_wasm::kv;
///
/// let visits = kv::incr("default", "visits", 1)?;
/// kv::set_with_ttl("default", "last", "now", std::time::Duration::from_secs(60))?;
/// ```
pub mod kv {
    use super::hostio;
    use std::borrow::Cow;
    use std::fmt;
    use std::time::Duration;

    io_error!(
        /// Why a KV operation failed: `store_not_granted`, `quota_exceeded`, `not_a_number`, ...
        KvError
    );

    const GET: u32 = 1;
    const SET: u32 = 2;
    const DELETE: u32 = 3;
    const LIST: u32 = 4;
    const INCR: u32 = 5;

    /// One page of [`list`]: the keys in order, and the cursor for the next page (`None`: the last).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Page {
        pub keys: Vec<Vec<u8>>,
        pub cursor: Option<Vec<u8>>,
    }

    fn millis(ttl: Duration) -> u64 {
        match ttl.as_millis() {
            0 if !ttl.is_zero() => 1, // under a millisecond still expires
            ms => u64::try_from(ms).unwrap_or(u64::MAX),
        }
    }

    /// Runs one operation: `value` (set only) and `extra` follow op, store and key.
    fn call(op: u32, store: &str, key: &[u8], value: Option<&[u8]>, extra: &[u8]) -> Result<Vec<u8>, KvError> {
        let too_large = || KvError::from(hostio::failure("value_too_large", "the KV operation is larger than 4 GiB"));
        let mut record = Vec::new();
        let size = (16 + store.len() + extra.len())
            .saturating_add(key.len())
            .saturating_add(value.map_or(0, <[u8]>::len));
        record
            .try_reserve_exact(size)
            .map_err(|_| KvError::from(hostio::failure("out_of_memory", "no memory for the KV operation")))?;
        record.extend_from_slice(&op.to_le_bytes());
        hostio::field(&mut record, store.as_bytes()).ok_or_else(too_large)?;
        hostio::field(&mut record, key).ok_or_else(too_large)?;
        if let Some(value) = value {
            hostio::field(&mut record, value).ok_or_else(too_large)?;
        }
        record.extend_from_slice(extra);
        if u32::try_from(record.len()).is_err() {
            return Err(too_large());
        }
        #[cfg(target_arch = "wasm32")]
        {
            // SAFETY: the host only reads the record's bytes during the call.
            let packed = unsafe { hostio::kv(record.as_ptr(), record.len()) };
            let (handle, len) = hostio::split(packed).ok_or_else(hostio::pending)?;
            Ok(hostio::take(handle, len)?)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Err(hostio::no_io().into())
        }
    }

    fn flag(r: &mut super::Reader<'_>) -> Result<bool, KvError> {
        match r.u32() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(hostio::invalid().into()),
        }
    }

    /// The value of `key` in `store`, or `None`.
    pub fn get(store: &str, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        let record = call(GET, store, key.as_ref(), None, &[])?;
        let mut r = hostio::ok(&record)?;
        let found = flag(&mut r)?;
        let value = r.field().ok_or_else(hostio::invalid)?.to_vec();
        hostio::end(&r)?;
        Ok(found.then(|| value))
    }

    /// Sets `key` to `value`, with no expiry.
    pub fn set(store: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        set_with_ttl(store, key, value, Duration::ZERO)
    }

    /// Sets `key` to `value`; it expires after `ttl` (`Duration::ZERO`: never).
    pub fn set_with_ttl(
        store: &str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let record = call(SET, store, key.as_ref(), Some(value.as_ref()), &millis(ttl).to_le_bytes())?;
        let r = hostio::ok(&record)?;
        Ok(hostio::end(&r)?)
    }

    /// Deletes `key`; `true` when it existed.
    pub fn delete(store: &str, key: impl AsRef<[u8]>) -> Result<bool, KvError> {
        let record = call(DELETE, store, key.as_ref(), None, &[])?;
        let mut r = hostio::ok(&record)?;
        let deleted = flag(&mut r)?;
        hostio::end(&r)?;
        Ok(deleted)
    }

    /// Up to `limit` (1 to 1000) keys that start with `prefix` (may be empty), in order, from `cursor`
    /// (`None`: the start; else the previous page's cursor).
    pub fn list(store: &str, prefix: impl AsRef<[u8]>, cursor: Option<&[u8]>, limit: u32) -> Result<Page, KvError> {
        let cursor = cursor.unwrap_or(&[]);
        let mut extra = Vec::new();
        hostio::field(&mut extra, cursor)
            .ok_or_else(|| KvError::from(hostio::failure("invalid_argument", "the cursor is too long")))?;
        extra.extend_from_slice(&limit.to_le_bytes());
        let record = call(LIST, store, prefix.as_ref(), None, &extra)?;
        let mut r = hostio::ok(&record)?;
        let count = r.u32().ok_or_else(hostio::invalid)? as usize;
        // Each key takes at least 4 bytes, so a lying count can't reserve a huge Vec.
        if count > (record.len() - r.pos) / 4 {
            return Err(hostio::invalid().into());
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(r.field().ok_or_else(hostio::invalid)?.to_vec());
        }
        let cursor = r.field().ok_or_else(hostio::invalid)?;
        hostio::end(&r)?;
        Ok(Page {
            keys,
            cursor: (!cursor.is_empty()).then(|| cursor.to_vec()),
        })
    }

    /// Adds `delta` to the number at `key` (a missing key counts as 0), atomically: the new value.
    pub fn incr(store: &str, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, KvError> {
        incr_with_ttl(store, key, delta, Duration::ZERO)
    }

    /// [`incr`]; a key it creates expires after `ttl` (`Duration::ZERO`: never; an existing key keeps
    /// its expiry).
    pub fn incr_with_ttl(store: &str, key: impl AsRef<[u8]>, delta: i64, ttl: Duration) -> Result<i64, KvError> {
        let mut extra = [0u8; 16];
        extra[..8].copy_from_slice(&delta.to_le_bytes());
        extra[8..].copy_from_slice(&millis(ttl).to_le_bytes());
        let record = call(INCR, store, key.as_ref(), None, &extra)?;
        let mut r = hostio::ok(&record)?;
        let value = hostio::u64(&mut r).ok_or_else(hostio::invalid)? as i64;
        hostio::end(&r)?;
        Ok(value)
    }
}

pub use kv::KvError;

/// Exports `handler` as the function's request handler; what `#[edge_function]` expands to. Use it
/// directly when the handler is defined elsewhere: `edge_hive_wasm::export_handler!(routes::handle);`.
/// One per crate: the export names are fixed. Off wasm it expands to nothing.
#[macro_export]
macro_rules! export_handler {
    ($handler:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[no_mangle]
            extern "C" fn hive_abi_v1() {}

            #[no_mangle]
            extern "C" fn hive_alloc(size: u32) -> *mut u8 {
                $crate::__abi::alloc(size)
            }

            #[no_mangle]
            unsafe extern "C" fn hive_free(ptr: *mut u8, size: u32) {
                $crate::__abi::free(ptr, size)
            }

            #[no_mangle]
            unsafe extern "C" fn hive_handle(ptr: *const u8, len: u32) -> u64 {
                let handler: $crate::__abi::Handler = $handler;
                $crate::__abi::handle(ptr, len, handler)
            }
        };
    };
}

/// Runs `handler` on a request envelope and returns the response envelope. Never fails: a
/// malformed envelope gets a 400, an `Err` its error response, an invalid status a 500.
fn dispatch(envelope: &[u8], handler: __abi::Handler) -> Vec<u8> {
    let response = match Request::decode(envelope) {
        None => Error::bad_request("malformed request envelope").into_response(),
        Some(req) => match handler(req) {
            Ok(res) if (100..=599).contains(&res.status) => res,
            Ok(res) => {
                hive_log(Level::Error, &format!("invalid HTTP status {}", res.status));
                Error::internal("the handler set an invalid HTTP status")
                    .with_code("handler_failed")
                    .into_response()
            }
            Err(e) => {
                if e.status >= 500 {
                    hive_log(Level::Error, &format!("handler failed: {e}"));
                }
                e.into_response()
            }
        },
    };
    response.encode()
}

#[doc(hidden)]
pub mod __abi {
    use super::*;
    use std::alloc::{alloc as raw_alloc, dealloc, Layout};
    use std::panic;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// What `#[edge_function]` accepts.
    pub type Handler = fn(Request) -> Result<Response, Error>;

    thread_local! {
        // The last response envelope: it must stay valid until the host's next call into the guest.
        static LAST: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    }

    fn layout(size: u32) -> Layout {
        // 8-byte aligned per the ABI; never zero-sized, which the allocator does not allow.
        Layout::from_size_align((size as usize).max(1), 8).unwrap()
    }

    /// A real heap allocation: the host keeps it across requests.
    pub fn alloc(size: u32) -> *mut u8 {
        unsafe { raw_alloc(layout(size)) }
    }

    /// # Safety
    /// `ptr` and `size` come from one earlier `alloc`.
    pub unsafe fn free(ptr: *mut u8, size: u32) {
        if !ptr.is_null() {
            dealloc(ptr, layout(size))
        }
    }

    /// # Safety
    /// `ptr..ptr + len` is readable guest memory (the host's request buffer).
    pub unsafe fn handle(ptr: *const u8, len: u32, handler: Handler) -> u64 {
        // A panic aborts (a trap, which the host answers with a 502): say why in one log line first.
        // A flag, not a Once: Once's general machinery is about 3 KB of every module.
        static HOOKED: AtomicBool = AtomicBool::new(false);
        if !HOOKED.swap(true, Ordering::Relaxed) {
            panic::set_hook(Box::new(|info| {
                hive_log(Level::Error, &format!("handler {info}"))
            }))
        }
        LAST.with(|last| drop(last.take())); // free the previous response before this request runs
        let envelope = if ptr.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(ptr, len as usize)
        };
        let out = dispatch(envelope, handler);
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            *last = out;
            (last.as_ptr() as u64) << 32 | last.len() as u64
        })
    }
}
