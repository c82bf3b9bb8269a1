//! edge_hive.zig: the Edge Hive Zig SDK, guest ABI v1 (see docs/abi.md and docs/sdk-zig.md).
//!
//! A function is a root file that defines a handler and exports it:
//!
//!     const std = @import("std");
//!     const hive = @import("edge_hive");
//!
//!     pub const panic = hive.panic; // required: Zig's default handler needs refused WASI imports
//!     pub const std_options: std.Options = .{ .logFn = hive.logFn }; // std.log -> hive.log
//!
//!     pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
//!         const Body = struct { name: []const u8 = "World" };
//!         const body = req.json(Body, alloc) catch Body{};
//!         hive.log.info("{s} {s}", .{ req.method, req.path });
//!         return hive.Response.json(alloc, 200, .{ .hello = body.name });
//!     }
//!
//!     comptime {
//!         hive.exportHandler(handler);
//!     }
//!
//! `edge-hive function build <folder>` compiles it with the pinned Zig (pip `ziglang`) for wasm32-wasi,
//! ReleaseSmall, with this file as the `edge_hive` module. No libc, no entry point.
//!
//! Outbound HTTP and key-value stores (docs/sdk-zig.md, "Fetch and KV"): `fetch(alloc, .{ .url = ... })`,
//! `fetchSend` / `Pending.wait` / `fetchWaitAny`, `kv.get`, `kv.set`, `kv.delete`, `kv.list`, `kv.incr`;
//! each returns a `Result(T)` union (`.ok` or `.err`, an `IoError` with code and message).
//!
//! Natively (`zig test`), `dispatch(handler, envelope)` runs a handler on an envelope without the
//! exports; log lines go to stderr, `now()` is 0, `env()` is null and fetch and KV
//! answer `no_io` there.
//!
//! Memory: `alloc` is an arena that lives for one request; everything allocated from it (the request's
//! header list, parsed JSON, the response) is released when the next request starts, so a handler never
//! frees anything. `Request` slices point into the host's request buffer and are valid only until the
//! handler returns. The request buffer itself comes from `std.heap.wasm_allocator`, as the ABI demands.
//!
//! Failures become ordinary JSON responses `{"error", "message"}`: 400 `bad_request` for a malformed
//! request envelope, 500 `out_of_memory` when an allocation fails, 500 `handler_failed` when the handler
//! returns an error (its name is the message) or a status outside 100..599. Header builders drop (and
//! log at warn level) headers the host would refuse instead of failing the response.
const std = @import("std");
const builtin = @import("builtin");

const Allocator = std.mem.Allocator;
const is_wasm = builtin.target.cpu.arch.isWasm();
/// The real allocator behind everything (hive_alloc, the arena, the environment).
const gpa = if (is_wasm) std.heap.wasm_allocator else std.heap.page_allocator;

pub const abi_version = 1;
pub const max_headers = 256;
pub const max_header_name = 256;
pub const max_header_value = 16 * 1024;
/// The request header carrying the verified JWT claims; see `Request.authClaims`.
pub const auth_claims_header = "x-hive-auth-claims";

// ---- logging --------------------------------------------------------------------------------------

pub const Level = enum(i32) { debug = 0, info = 1, warn = 2, err = 3 };

const host = if (is_wasm) struct {
    extern "hive" fn log(level: i32, ptr: [*]const u8, len: usize) void;
} else struct {
    // Natively (unit tests of a handler with `zig test`) log lines go to stderr.
    fn log(level: i32, ptr: [*]const u8, len: usize) void {
        std.debug.print("[{d}] {s}\n", .{ level, ptr[0..len] });
    }
};

/// Writes one line (the raw bytes) to the function's log.
pub fn logRaw(level: Level, msg: []const u8) void {
    host.log(@intFromEnum(level), msg.ptr, msg.len);
}

var log_buf: [8 * 1024]u8 = undefined;

/// Formats one log line (truncated at 8 KiB, the host's line limit) and sends it to `hive.log`.
pub fn logf(level: Level, comptime fmt: []const u8, args: anytype) void {
    var w: std.Io.Writer = .fixed(&log_buf);
    w.print(fmt, args) catch {}; // a line that does not fit is truncated
    logRaw(level, w.buffered());
}

/// `hive.log.info("{s} {d}", .{ name, n })` and friends.
pub const log = struct {
    pub fn debug(comptime fmt: []const u8, args: anytype) void {
        logf(.debug, fmt, args);
    }
    pub fn info(comptime fmt: []const u8, args: anytype) void {
        logf(.info, fmt, args);
    }
    pub fn warn(comptime fmt: []const u8, args: anytype) void {
        logf(.warn, fmt, args);
    }
    pub fn err(comptime fmt: []const u8, args: anytype) void {
        logf(.err, fmt, args);
    }
};

/// Routes `std.log` to `hive.log`: `pub const std_options: std.Options = .{ .logFn = hive.logFn };`
pub fn logFn(
    comptime level: std.log.Level,
    comptime scope: @TypeOf(.enum_literal),
    comptime format: []const u8,
    args: anytype,
) void {
    const lvl: Level = switch (level) {
        .debug => .debug,
        .info => .info,
        .warn => .warn,
        .err => .err,
    };
    const prefix = if (scope == .default) "" else "(" ++ @tagName(scope) ++ ") ";
    logf(lvl, prefix ++ format, args);
}

/// A panic handler that logs the message with `hive.log` (level error) and traps; the host then answers
/// 502 and replaces the instance. Use it with `pub const panic = hive.panic;` in the root file.
pub const panic = std.debug.FullPanic(panicFn);

fn panicFn(msg: []const u8, first_trace_addr: ?usize) noreturn {
    _ = first_trace_addr;
    logf(.err, "panic: {s}", .{msg});
    @trap();
}

// ---- request ---------------------------------------------------------------------------------------

pub const Header = struct {
    name: []const u8,
    value: []const u8,
};

pub const Request = struct {
    /// As received, e.g. "GET"; not normalized.
    method: []const u8,
    /// The raw request path, e.g. "/api/v1/edge/hello".
    path: []const u8,
    /// The raw query string without the "?", possibly empty.
    query: []const u8,
    /// In arrival order, names lowercase, repeated headers kept.
    headers: []const Header,
    /// Binary-safe.
    body: []const u8,

    /// The first value of header `name` (any case), or null.
    pub fn header(self: *const Request, name: []const u8) ?[]const u8 {
        var it = self.headerValues(name);
        return it.next();
    }

    /// The claims of the caller's JWT as compact JSON (parse it with std.json), set by the server after it
    /// verified the token (auth.mode "jwt"); the server drops any copy a client sent. Null when the
    /// function has no verified token (public or API-key functions).
    pub fn authClaims(self: *const Request) ?[]const u8 {
        return self.header(auth_claims_header);
    }

    /// Every value of header `name` (any case), in order: `while (it.next()) |v| ...`.
    pub fn headerValues(self: *const Request, name: []const u8) HeaderIterator {
        return .{ .headers = self.headers, .name = name };
    }

    /// Parses the body as JSON into `T` (unknown fields ignored, the last duplicate wins). The result
    /// lives in `alloc` (use the handler's arena) and may point into the body, so it is valid until
    /// the handler returns. Fails with a std.json error when the body is not JSON of that shape.
    pub fn json(self: *const Request, comptime T: type, alloc: Allocator) !T {
        return std.json.parseFromSliceLeaky(T, alloc, self.body, .{
            .ignore_unknown_fields = true,
            .duplicate_field_behavior = .use_last,
        });
    }

    /// The first value of query parameter `name`, percent-decoded ('+' is a space), or null.
    pub fn queryParam(self: *const Request, alloc: Allocator, name: []const u8) Allocator.Error!?[]const u8 {
        var pairs = std.mem.splitScalar(u8, self.query, '&');
        while (pairs.next()) |pair| {
            if (pair.len == 0) continue;
            const eq = std.mem.indexOfScalar(u8, pair, '=');
            const key = try percentDecode(alloc, pair[0 .. eq orelse pair.len]);
            if (!std.mem.eql(u8, key, name)) continue;
            return try percentDecode(alloc, if (eq) |i| pair[i + 1 ..] else "");
        }
        return null;
    }
};

pub const HeaderIterator = struct {
    headers: []const Header,
    name: []const u8,
    index: usize = 0,

    pub fn next(self: *HeaderIterator) ?[]const u8 {
        while (self.index < self.headers.len) {
            const h = self.headers[self.index];
            self.index += 1;
            if (std.ascii.eqlIgnoreCase(h.name, self.name)) return h.value;
        }
        return null;
    }
};

/// Decodes %XX escapes and '+' (form encoding); a malformed escape stays as it is.
pub fn percentDecode(alloc: Allocator, s: []const u8) Allocator.Error![]const u8 {
    if (std.mem.indexOfAny(u8, s, "%+") == null) return s;
    var out = try alloc.alloc(u8, s.len);
    var i: usize = 0;
    var n: usize = 0;
    while (i < s.len) : (n += 1) {
        if (s[i] == '+') {
            out[n] = ' ';
            i += 1;
        } else if (s[i] == '%' and i + 2 < s.len) {
            const hi = std.fmt.charToDigit(s[i + 1], 16) catch null;
            const lo = std.fmt.charToDigit(s[i + 2], 16) catch null;
            if (hi != null and lo != null) {
                out[n] = hi.? * 16 + lo.?;
                i += 3;
            } else {
                out[n] = s[i];
                i += 1;
            }
        } else {
            out[n] = s[i];
            i += 1;
        }
    }
    return out[0..n];
}

const Reader = struct {
    buf: []const u8,
    pos: usize = 0,

    fn int(r: *Reader) error{Malformed}!u32 {
        if (r.buf.len - r.pos < 4) return error.Malformed;
        const v = std.mem.readInt(u32, r.buf[r.pos..][0..4], .little);
        r.pos += 4;
        return v;
    }

    fn field(r: *Reader) error{Malformed}![]const u8 {
        const n = try r.int();
        if (r.buf.len - r.pos < n) return error.Malformed;
        const s = r.buf[r.pos .. r.pos + n];
        r.pos += n;
        return s;
    }
};

/// Decodes a request envelope; every length is checked. The fields point into `buf`.
pub fn decodeRequest(alloc: Allocator, buf: []const u8) error{ Malformed, OutOfMemory }!Request {
    var r: Reader = .{ .buf = buf };
    const method = try r.field();
    const path = try r.field();
    const query = try r.field();
    const count = try r.int();
    // Each header takes at least 8 bytes, so a lying count can't ask for a huge array.
    if (count > (buf.len - r.pos) / 8) return error.Malformed;
    const headers = try alloc.alloc(Header, count);
    for (headers) |*h| {
        h.name = try r.field();
        h.value = try r.field();
    }
    const body = try r.field();
    if (r.pos != buf.len) return error.Malformed;
    return .{ .method = method, .path = path, .query = query, .headers = headers, .body = body };
}

// ---- response --------------------------------------------------------------------------------------

pub const Response = struct {
    status: u16,
    headers: std.ArrayList(Header) = .empty,
    body: std.ArrayList(u8) = .empty,
    alloc: Allocator,

    /// An empty response; add headers and a body with the methods below.
    pub fn init(alloc: Allocator, status: u16) Response {
        return .{ .status = status, .alloc = alloc };
    }

    /// Adds a header (copied). One the host would refuse (a name that is not an HTTP token of 1 to
    /// 256 bytes, a value over 16 KiB or with CR, LF or NUL, more than 256 headers) is dropped and
    /// logged at warn level instead.
    pub fn header(self: *Response, name: []const u8, value: []const u8) Allocator.Error!void {
        if (headerProblem(self.headers.items.len, name, value)) |why| {
            log.warn("dropped response header \"{s}\": {s}", .{ name[0..@min(name.len, 64)], why });
            return;
        }
        try self.headers.append(self.alloc, .{
            .name = try self.alloc.dupe(u8, name),
            .value = try self.alloc.dupe(u8, value),
        });
    }

    /// Replaces the body with a copy of `data`.
    pub fn setBody(self: *Response, data: []const u8) Allocator.Error!void {
        self.body.clearRetainingCapacity();
        try self.body.appendSlice(self.alloc, data);
    }

    /// Appends `data` to the body.
    pub fn append(self: *Response, data: []const u8) Allocator.Error!void {
        try self.body.appendSlice(self.alloc, data);
    }

    /// Appends formatted text to the body.
    pub fn print(self: *Response, comptime fmt: []const u8, args: anytype) Allocator.Error!void {
        try self.body.print(self.alloc, fmt, args);
    }

    /// `content-type: application/json` and `value` serialized with std.json (a struct, slice, map,
    /// std.json.Value, ...). Strings must be valid UTF-8.
    pub fn json(alloc: Allocator, status: u16, value: anytype) Allocator.Error!Response {
        return jsonWith(alloc, status, value, .{});
    }

    /// `json` with std.json.Stringify options (whitespace, emit_null_optional_fields, ...).
    pub fn jsonWith(alloc: Allocator, status: u16, value: anytype, options: std.json.Stringify.Options) Allocator.Error!Response {
        var res = init(alloc, status);
        try res.header("content-type", "application/json");
        var out: std.Io.Writer.Allocating = .fromArrayList(alloc, &res.body);
        std.json.Stringify.value(value, options, &out.writer) catch return error.OutOfMemory;
        res.body = out.toArrayList();
        return res;
    }

    /// `content-type: text/plain; charset=utf-8` and a copy of `text` as the body.
    pub fn text(alloc: Allocator, status: u16, body: []const u8) Allocator.Error!Response {
        return bytes(alloc, status, "text/plain; charset=utf-8", body);
    }

    /// Any content type, any bytes.
    pub fn bytes(alloc: Allocator, status: u16, content_type: []const u8, body: []const u8) Allocator.Error!Response {
        var res = init(alloc, status);
        try res.header("content-type", content_type);
        try res.setBody(body);
        return res;
    }
};

fn isTokenChar(c: u8) bool {
    return switch (c) {
        '0'...'9', 'a'...'z', 'A'...'Z', '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~' => true,
        else => false,
    };
}

/// Why the host would refuse this header (as the `count`-th one), or null when it is fine.
pub fn headerProblem(count: usize, name: []const u8, value: []const u8) ?[]const u8 {
    if (count >= max_headers) return "more than 256 headers";
    if (name.len == 0 or name.len > max_header_name) return "the name is not an HTTP token of 1 to 256 bytes";
    for (name) |c| if (!isTokenChar(c)) return "the name is not an HTTP token of 1 to 256 bytes";
    if (value.len > max_header_value) return "the value is longer than 16 KiB";
    if (std.mem.indexOfAny(u8, value, "\r\n\x00") != null) return "the value contains CR, LF or NUL";
    return null;
}

/// Encodes a response envelope into memory from `alloc`.
pub fn encodeResponse(alloc: Allocator, res: *const Response) error{ OutOfMemory, TooLarge }![]u8 {
    var n: usize = 12;
    for (res.headers.items) |h| n += 8 + h.name.len + h.value.len;
    n += res.body.items.len;
    if (n > std.math.maxInt(u32)) return error.TooLarge;
    const out = try alloc.alloc(u8, n);
    var p: usize = 0;
    put(out, &p, res.status);
    put(out, &p, @intCast(res.headers.items.len));
    for (res.headers.items) |h| {
        putField(out, &p, h.name);
        putField(out, &p, h.value);
    }
    putField(out, &p, res.body.items);
    return out;
}

fn put(out: []u8, p: *usize, v: u32) void {
    std.mem.writeInt(u32, out[p.*..][0..4], v, .little);
    p.* += 4;
}

fn putField(out: []u8, p: *usize, s: []const u8) void {
    put(out, p, @intCast(s.len));
    @memcpy(out[p.* .. p.* + s.len], s);
    p.* += s.len;
}

// ---- WASI helpers -----------------------------------------------------------------------------------

const wasi = std.os.wasi;

/// Nanoseconds since the Unix epoch, from the WASI realtime clock (0 if the clock fails).
pub fn nowNanos() i64 {
    if (comptime !is_wasm) return 0;
    var ts: wasi.timestamp_t = 0;
    if (wasi.clock_time_get(.REALTIME, 1, &ts) != .SUCCESS) return 0;
    return @intCast(ts);
}

/// Seconds since the Unix epoch, from the WASI realtime clock.
pub fn now() i64 {
    return @divFloor(nowNanos(), std.time.ns_per_s);
}

/// RFC 3339 UTC to the second, e.g. "2026-11-24T19:40:00Z", for Unix seconds `secs` (>= 0).
pub fn rfc3339(secs: i64) [20]u8 {
    const es: std.time.epoch.EpochSeconds = .{ .secs = @intCast(@max(secs, 0)) };
    const yd = es.getEpochDay().calculateYearDay();
    const md = yd.calculateMonthDay();
    const ds = es.getDaySeconds();
    var out: [20]u8 = undefined;
    _ = std.fmt.bufPrint(&out, "{d:0>4}-{d:0>2}-{d:0>2}T{d:0>2}:{d:0>2}:{d:0>2}Z", .{
        yd.year,                     md.month.numeric(),         @as(u32, md.day_index) + 1,
        ds.getHoursIntoDay(), ds.getMinutesIntoHour(), ds.getSecondsIntoMinute(),
    }) catch unreachable;
    return out;
}

var environ: ?[]const []const u8 = null;

fn loadEnviron() []const []const u8 {
    if (environ) |e| return e;
    var count: usize = 0;
    var size: usize = 0;
    if (wasi.environ_sizes_get(&count, &size) != .SUCCESS) return &.{};
    const ptrs = gpa.alloc([*:0]u8, count) catch return &.{};
    const buf = gpa.alloc(u8, size) catch return &.{};
    const list = gpa.alloc([]const u8, count) catch return &.{};
    if (count > 0 and wasi.environ_get(ptrs.ptr, buf.ptr) != .SUCCESS) return &.{};
    for (ptrs, list) |p, *item| item.* = std.mem.span(p);
    gpa.free(ptrs);
    environ = list;
    return list;
}

/// A configured value of this function (its `config` table, delivered as the WASI environment), or
/// null. Read once per instance and kept; the slice stays valid for the instance's lifetime.
pub fn env(name: []const u8) ?[]const u8 {
    if (comptime !is_wasm) return null;
    for (loadEnviron()) |pair| {
        if (pair.len > name.len and pair[name.len] == '=' and std.mem.eql(u8, pair[0..name.len], name))
            return pair[name.len + 1 ..];
    }
    return null;
}

// ---- outbound HTTP (fetch) and key-value stores (ABI v1 revision 2: docs/abi.md) ----------------------

/// An error as a value: a stable snake_case code, the host's (`host_not_allowed`, `timeout`,
/// `quota_exceeded`, ...; docs/abi.md) or the SDK's own (`too_many_pending`, `unknown_handle`,
/// `invalid_argument`, `out_of_memory`, `invalid_result`, `no_io`), and a message.
pub const IoError = struct {
    code: []const u8,
    message: []const u8,
};

/// What a fetch or KV call returns: `.ok` with the value, or `.err` with an `IoError`. Never an abort.
pub fn Result(comptime T: type) type {
    return union(enum) {
        ok: T,
        err: IoError,

        /// The value, or `error.IoFailed` (the `IoError` is lost: switch on the union to keep it).
        pub fn unwrap(self: @This()) error{IoFailed}!T {
            return switch (self) {
                .ok => |v| v,
                .err => error.IoFailed,
            };
        }
    };
}

pub const max_fetch_headers = 256;

pub const FetchRequest = struct {
    method: []const u8 = "GET",
    /// An absolute http:// or https:// URL on a host the manifest's "allowed_hosts" grants.
    url: []const u8,
    /// At most 256.
    headers: []const Header = &.{},
    body: []const u8 = "",
};

/// An upstream's response, valid until the handler returns: the body and the header names and values
/// point into the result the SDK copied out of the host; the header array comes from `alloc`.
pub const FetchResponse = struct {
    status: u32,
    /// As the upstream sent them, in order.
    headers: []const Header,
    body: []const u8,

    /// The first value of header `name` (any case), or null.
    pub fn header(self: *const FetchResponse, name: []const u8) ?[]const u8 {
        var it: HeaderIterator = .{ .headers = self.headers, .name = name };
        return it.next();
    }
};

/// A started fetch: `wait` for it before the handler returns (an unread result is dropped then, and
/// counts against the 64 a guest may hold).
pub const Pending = struct {
    handle: i32,

    /// Blocks until the response is in (its header array is allocated from `alloc`).
    pub fn wait(self: Pending, alloc: Allocator) Result(FetchResponse) {
        return waitHandle(alloc, self.handle).result;
    }
};

const io_host = if (is_wasm) struct {
    extern "hive" fn fetch_send(ptr: [*]const u8, len: usize) i32;
    extern "hive" fn fetch_wait(handle: i32) i64;
    extern "hive" fn kv(ptr: [*]const u8, len: usize) i64;
    extern "hive" fn result_read(handle: i32, ptr: ?[*]u8, len: usize) i32;
} else struct {
    // Natively there is no host: every call answers `no_io` before it gets here.
    fn fetch_send(_: [*]const u8, _: usize) i32 {
        unreachable;
    }
    fn fetch_wait(_: i32) i64 {
        unreachable;
    }
    fn kv(_: [*]const u8, _: usize) i64 {
        unreachable;
    }
    fn result_read(_: i32, _: ?[*]u8, _: usize) i32 {
        unreachable;
    }
};

const invalid_result: IoError = .{ .code = "invalid_result", .message = "the host sent a malformed result record" };
const too_many_pending: IoError = .{ .code = "too_many_pending", .message = "64 results are not read yet: wait for some first" };
const no_io: IoError = .{ .code = "no_io", .message = "fetch and KV need the Edge Hive host (a wasm32 build)" };
const no_memory: IoError = .{ .code = "out_of_memory", .message = "no memory for the host call" };

fn fail(comptime T: type, e: IoError) Result(T) {
    return .{ .err = e };
}

/// Builds a record of `size` bytes (checked to fit a u32) from `alloc`.
const RecordWriter = struct {
    buf: []u8,
    pos: usize = 0,

    fn int(w: *RecordWriter, v: u32) void {
        std.mem.writeInt(u32, w.buf[w.pos..][0..4], v, .little);
        w.pos += 4;
    }

    fn int64(w: *RecordWriter, v: u64) void {
        std.mem.writeInt(u64, w.buf[w.pos..][0..8], v, .little);
        w.pos += 8;
    }

    fn field(w: *RecordWriter, s: []const u8) void {
        w.int(@intCast(s.len));
        @memcpy(w.buf[w.pos .. w.pos + s.len], s);
        w.pos += s.len;
    }
};

/// 4 + len, or null when a field does not fit a u32.
fn fieldSize(len: usize) ?u64 {
    if (len > std.math.maxInt(u32)) return null;
    return 4 + @as(u64, len);
}

fn packedSplit(packed_value: i64) ?struct { handle: i32, len: u32 } {
    if (packed_value < 0) return null;
    const v: u64 = @bitCast(packed_value);
    return .{ .handle = @bitCast(@as(u32, @truncate(v >> 32))), .len = @truncate(v) };
}

/// Result records copied out of the host, freed when the next request starts (what fetch and KV return
/// points into them). They come from `gpa`, not the arena: a lying host may announce any length, and
/// the arena's bookkeeping overflows on a wasm32 allocation near 4 GiB.
var result_bufs: std.ArrayList([]u8) = .empty;

fn releaseResults() void {
    for (result_bufs.items) |b| gpa.free(b);
    result_bufs.clearRetainingCapacity();
}

/// The result record of `handle` (`len` bytes, as announced), copied out of the host; then its kind:
/// a reader after it for an ok result, the host's error otherwise.
fn takeResult(handle: i32, len: u32) union(enum) { ok: Reader, err: IoError } {
    if (handle < 1) return .{ .err = invalid_result };
    if (len < 4) { // not even a kind
        _ = io_host.result_read(handle, null, 0); // frees the host's slot
        return .{ .err = invalid_result };
    }
    result_bufs.ensureUnusedCapacity(gpa, 1) catch {
        _ = io_host.result_read(handle, null, 0);
        return .{ .err = no_memory };
    };
    const buf = gpa.alloc(u8, len) catch {
        _ = io_host.result_read(handle, null, 0);
        return .{ .err = no_memory };
    };
    result_bufs.appendAssumeCapacity(buf);
    const n = io_host.result_read(handle, buf.ptr, buf.len);
    if (n < 0) return .{ .err = .{ .code = "unknown_handle", .message = "the host has no result for this handle" } };
    if (@as(u32, @bitCast(n)) != len) return .{ .err = invalid_result }; // never trust more than both agree on
    var r: Reader = .{ .buf = buf };
    const kind = r.int() catch return .{ .err = invalid_result };
    switch (kind) {
        0 => return .{ .ok = r },
        1 => {
            const code = r.field() catch return .{ .err = invalid_result };
            const message = r.field() catch return .{ .err = invalid_result };
            if (code.len == 0 or r.pos != r.buf.len) return .{ .err = invalid_result };
            return .{ .err = .{ .code = code, .message = message } };
        },
        else => return .{ .err = invalid_result },
    }
}

/// The request record, from `gpa` (freed by the caller).
fn fetchRecord(req: FetchRequest) Result([]u8) {
    if (req.headers.len > max_fetch_headers)
        return fail([]u8, .{ .code = "invalid_argument", .message = "a fetch has at most 256 headers" });
    const too_large: IoError = .{ .code = "request_too_large", .message = "the fetch request is larger than 4 GiB" };
    const method = if (req.method.len == 0) "GET" else req.method;
    var size: u64 = 4;
    size += fieldSize(method.len) orelse return fail([]u8, too_large);
    size += fieldSize(req.url.len) orelse return fail([]u8, too_large);
    size += fieldSize(req.body.len) orelse return fail([]u8, too_large);
    for (req.headers) |h| {
        size += fieldSize(h.name.len) orelse return fail([]u8, too_large);
        size += fieldSize(h.value.len) orelse return fail([]u8, too_large);
    }
    if (size > std.math.maxInt(u32)) return fail([]u8, too_large);
    var w: RecordWriter = .{ .buf = gpa.alloc(u8, @intCast(size)) catch return fail([]u8, no_memory) };
    w.field(method);
    w.field(req.url);
    w.int(@intCast(req.headers.len));
    for (req.headers) |h| {
        w.field(h.name);
        w.field(h.value);
    }
    w.field(req.body);
    return .{ .ok = w.buf };
}

/// Starts an outbound request and returns at once; `wait` on the `Pending` for its response.
/// Several started requests run concurrently.
pub fn fetchSend(req: FetchRequest) Result(Pending) {
    if (comptime !is_wasm) return fail(Pending, no_io);
    const record = switch (fetchRecord(req)) {
        .ok => |r| r,
        .err => |e| return fail(Pending, e),
    };
    defer gpa.free(record);
    const handle = io_host.fetch_send(record.ptr, record.len);
    if (handle < 1) return fail(Pending, too_many_pending);
    return .{ .ok = .{ .handle = handle } };
}

pub const Finished = struct {
    /// The `Pending.handle` of the request that finished.
    handle: i32,
    result: Result(FetchResponse),
};

/// Blocks until the first of the started, not yet waited-for requests is done (its `handle` says
/// which; drop that `Pending`), or null when none is pending.
pub fn fetchWaitAny(alloc: Allocator) ?Finished {
    if (comptime !is_wasm) return null;
    const done = waitHandle(alloc, 0);
    if (done.handle == 0) return null;
    return done;
}

fn waitHandle(alloc: Allocator, handle: i32) Finished {
    if (comptime !is_wasm) return .{ .handle = handle, .result = fail(FetchResponse, no_io) };
    const split = packedSplit(io_host.fetch_wait(handle)) orelse return .{
        .handle = handle,
        .result = fail(FetchResponse, .{ .code = "unknown_handle", .message = "no such pending fetch" }),
    };
    if (split.handle < 1 or (handle != 0 and split.handle != handle))
        return .{ .handle = handle, .result = fail(FetchResponse, invalid_result) };
    return .{ .handle = split.handle, .result = decodeFetch(alloc, split.handle, split.len) };
}

fn decodeFetch(alloc: Allocator, handle: i32, len: u32) Result(FetchResponse) {
    var r = switch (takeResult(handle, len)) {
        .ok => |r| r,
        .err => |e| return fail(FetchResponse, e),
    };
    const status = r.int() catch return fail(FetchResponse, invalid_result);
    const count = r.int() catch return fail(FetchResponse, invalid_result);
    // Each header takes at least 8 bytes, so a lying count can't ask for a huge array.
    if (count > (r.buf.len - r.pos) / 8) return fail(FetchResponse, invalid_result);
    const headers = alloc.alloc(Header, count) catch return fail(FetchResponse, no_memory);
    for (headers) |*h| {
        h.name = r.field() catch return fail(FetchResponse, invalid_result);
        h.value = r.field() catch return fail(FetchResponse, invalid_result);
    }
    const body = r.field() catch return fail(FetchResponse, invalid_result);
    if (r.pos != r.buf.len) return fail(FetchResponse, invalid_result);
    return .{ .ok = .{ .status = status, .headers = headers, .body = body } };
}

/// One outbound request, start to finish (`fetchSend`, then `wait`); pass the handler's arena:
///
///     switch (hive.fetch(alloc, .{ .url = "https://api.example.com/v1/rates" })) {
///         .ok => |res| ...res.status, res.body...,
///         .err => |e| ...e.code, e.message...,
///     }
pub fn fetch(alloc: Allocator, req: FetchRequest) Result(FetchResponse) {
    return switch (fetchSend(req)) {
        .ok => |p| p.wait(alloc),
        .err => |e| fail(FetchResponse, e),
    };
}

/// Key-value stores the manifest grants by name ("kv": ["default"]). Keys (1 to 512 bytes) and values
/// (up to 1 MiB) are bytes. What a call returns is valid until the handler returns (values and keys
/// point into the result the SDK copied out of the host; `list` allocates its key array from `alloc`).
pub const kv = struct {
    pub const SetOptions = struct {
        /// Expire after this many milliseconds; 0: never.
        ttl_ms: u64 = 0,
    };

    pub const IncrOptions = struct {
        /// A key this creates expires after this many milliseconds (0: never); an existing key keeps
        /// its expiry.
        ttl_ms: u64 = 0,
    };

    pub const ListOptions = struct {
        /// Where to go on: the previous page's `cursor`; empty: from the start.
        cursor: []const u8 = "",
        /// 1 to 1000.
        limit: u32 = 100,
    };

    /// One page of keys, in order; `cursor` is null on the last page.
    pub const Page = struct {
        keys: []const []const u8,
        cursor: ?[]const u8,
    };

    const Op = enum(u32) { get = 1, set = 2, delete = 3, list = 4, incr = 5 };

    /// Runs one operation: `value` (set only) and `extra` follow op, store and key.
    fn call(op: Op, store: []const u8, key: []const u8, value: ?[]const u8, extra: []const u8) union(enum) { ok: Reader, err: IoError } {
        if (comptime !is_wasm) return .{ .err = no_io };
        const too_large: IoError = .{ .code = "value_too_large", .message = "the KV operation is larger than 4 GiB" };
        var size: u64 = 4 + @as(u64, extra.len);
        size += fieldSize(store.len) orelse return .{ .err = too_large };
        size += fieldSize(key.len) orelse return .{ .err = too_large };
        if (value) |v| size += fieldSize(v.len) orelse return .{ .err = too_large };
        if (size > std.math.maxInt(u32)) return .{ .err = too_large };
        var w: RecordWriter = .{ .buf = gpa.alloc(u8, @intCast(size)) catch return .{ .err = no_memory } };
        defer gpa.free(w.buf);
        w.int(@intFromEnum(op));
        w.field(store);
        w.field(key);
        if (value) |v| w.field(v);
        @memcpy(w.buf[w.pos..], extra);
        const split = packedSplit(io_host.kv(w.buf.ptr, w.buf.len)) orelse return .{ .err = too_many_pending };
        return switch (takeResult(split.handle, split.len)) {
            .ok => |r| .{ .ok = r },
            .err => |e| .{ .err = e },
        };
    }

    fn flag(r: *Reader) ?bool {
        return switch (r.int() catch return null) {
            0 => false,
            1 => true,
            else => null,
        };
    }

    /// The value of `key` in `store`, or null.
    pub fn get(store: []const u8, key: []const u8) Result(?[]const u8) {
        const T = ?[]const u8;
        var r = switch (call(.get, store, key, null, "")) {
            .ok => |r| r,
            .err => |e| return fail(T, e),
        };
        const found = flag(&r) orelse return fail(T, invalid_result);
        const value = r.field() catch return fail(T, invalid_result);
        if (r.pos != r.buf.len) return fail(T, invalid_result);
        return .{ .ok = if (found) value else null };
    }

    /// Sets `key` to `value`.
    pub fn set(store: []const u8, key: []const u8, value: []const u8, options: SetOptions) Result(void) {
        var extra: [8]u8 = undefined;
        std.mem.writeInt(u64, &extra, options.ttl_ms, .little);
        const r = switch (call(.set, store, key, value, &extra)) {
            .ok => |r| r,
            .err => |e| return fail(void, e),
        };
        if (r.pos != r.buf.len) return fail(void, invalid_result);
        return .{ .ok = {} };
    }

    /// Deletes `key`: whether it existed.
    pub fn delete(store: []const u8, key: []const u8) Result(bool) {
        var r = switch (call(.delete, store, key, null, "")) {
            .ok => |r| r,
            .err => |e| return fail(bool, e),
        };
        const deleted = flag(&r) orelse return fail(bool, invalid_result);
        if (r.pos != r.buf.len) return fail(bool, invalid_result);
        return .{ .ok = deleted };
    }

    /// Keys that start with `prefix` (may be empty), in order, one page at a time.
    pub fn list(alloc: Allocator, store: []const u8, prefix: []const u8, options: ListOptions) Result(Page) {
        if (options.cursor.len > std.math.maxInt(u32) - 8)
            return fail(Page, .{ .code = "invalid_argument", .message = "the cursor is too long" });
        const extra = gpa.alloc(u8, options.cursor.len + 8) catch return fail(Page, no_memory);
        defer gpa.free(extra);
        var w: RecordWriter = .{ .buf = extra };
        w.field(options.cursor);
        w.int(options.limit);
        var r = switch (call(.list, store, prefix, null, extra)) {
            .ok => |r| r,
            .err => |e| return fail(Page, e),
        };
        const count = r.int() catch return fail(Page, invalid_result);
        // Each key takes at least 4 bytes, so a lying count can't ask for a huge array.
        if (count > (r.buf.len - r.pos) / 4) return fail(Page, invalid_result);
        const keys = alloc.alloc([]const u8, count) catch return fail(Page, no_memory);
        for (keys) |*k| k.* = r.field() catch return fail(Page, invalid_result);
        const cursor = r.field() catch return fail(Page, invalid_result);
        if (r.pos != r.buf.len) return fail(Page, invalid_result);
        return .{ .ok = .{ .keys = keys, .cursor = if (cursor.len == 0) null else cursor } };
    }

    /// Adds `delta` to the number at `key` (a missing key counts as 0), atomically: the new value.
    pub fn incr(store: []const u8, key: []const u8, delta: i64, options: IncrOptions) Result(i64) {
        var extra: [16]u8 = undefined;
        std.mem.writeInt(i64, extra[0..8], delta, .little);
        std.mem.writeInt(u64, extra[8..16], options.ttl_ms, .little);
        var r = switch (call(.incr, store, key, null, &extra)) {
            .ok => |r| r,
            .err => |e| return fail(i64, e),
        };
        if (r.buf.len - r.pos != 8) return fail(i64, invalid_result);
        const value = std.mem.readInt(i64, r.buf[r.pos..][0..8], .little);
        r.pos += 8;
        return .{ .ok = value };
    }
};

// ---- dispatch and the ABI exports --------------------------------------------------------------------

var arena_state: std.heap.ArenaAllocator = .init(gpa);
var fixed_buf: [512]u8 = undefined;

/// A JSON error response built without allocating: the answer when memory or input can't be trusted.
fn fixedResponse(status: u32, code: []const u8, message: []const u8) []const u8 {
    const ct_name = "content-type";
    const ct_value = "application/json";
    var body_buf: [384]u8 = undefined;
    const body = std.fmt.bufPrint(&body_buf, "{{\"error\":\"{s}\",\"message\":\"{s}\"}}", .{
        code, message[0..@min(message.len, 256)],
    }) catch "{\"error\":\"handler_failed\"}";
    var p: usize = 0;
    put(&fixed_buf, &p, status);
    put(&fixed_buf, &p, 1);
    putField(&fixed_buf, &p, ct_name);
    putField(&fixed_buf, &p, ct_value);
    putField(&fixed_buf, &p, body);
    return fixed_buf[0..p];
}

/// Decodes `envelope`, runs `handler` and returns the response envelope, valid until the next call.
/// Never fails: a malformed envelope yields a 400, a failing handler a 500.
pub fn dispatch(comptime handler: anytype, envelope: []const u8) []const u8 {
    // The previous response lived in the arena; the host has copied it by now.
    _ = arena_state.reset(.{ .retain_with_limit = 256 * 1024 });
    releaseResults();
    const alloc = arena_state.allocator();
    const req = decodeRequest(alloc, envelope) catch |e| return switch (e) {
        error.Malformed => fixedResponse(400, "bad_request", "malformed request envelope"),
        error.OutOfMemory => oom(),
    };
    const result = handler(&req, alloc);
    const res: Response = if (@typeInfo(@TypeOf(result)) == .error_union) result catch |e| {
        if (e == error.OutOfMemory) return oom();
        log.err("handler failed: {s}", .{@errorName(e)});
        return fixedResponse(500, "handler_failed", @errorName(e));
    } else result;
    if (res.status < 100 or res.status > 599) {
        log.err("handler returned status {d}", .{res.status});
        return fixedResponse(500, "handler_failed", "the handler returned an invalid status");
    }
    return encodeResponse(alloc, &res) catch |e| switch (e) {
        error.OutOfMemory => oom(),
        error.TooLarge => fixedResponse(500, "handler_failed", "the response is larger than 4 GiB"),
    };
}

fn oom() []const u8 {
    return fixedResponse(500, "out_of_memory", "the function ran out of memory");
}

fn hiveAbiV1() callconv(.c) void {}

/// A real allocator, never the arena: the host keeps this buffer across requests.
fn hiveAlloc(size: usize) callconv(.c) ?[*]u8 {
    const buf = gpa.alignedAlloc(u8, .@"8", @max(size, 1)) catch return null;
    return buf.ptr;
}

fn hiveFree(ptr: ?[*]align(8) u8, size: usize) callconv(.c) void {
    const p = ptr orelse return;
    gpa.free(p[0..@max(size, 1)]);
}

/// Exports the ABI v1 functions with `handler` behind `hive_handle`. Call it once, from a comptime
/// block of the root file: `comptime { hive.exportHandler(handler); }`.
/// `handler` is `fn (req: *const Request, alloc: std.mem.Allocator) !Response` (or returns a plain
/// `Response`). The root file must also declare `pub const panic = edge_hive.panic;` (or its own
/// panic handler): Zig's default one needs WASI imports the host refuses, so this is a compile error.
pub fn exportHandler(comptime handler: anytype) void {
    if (!@hasDecl(@import("root"), "panic")) @compileError(
        "add `pub const panic = edge_hive.panic;` to the root file: Zig's default panic handler " ++
            "imports WASI file-system functions the Edge Hive host refuses",
    );
    const S = struct {
        fn handle(ptr: [*]const u8, len: usize) callconv(.c) i64 {
            const out = dispatch(handler, ptr[0..len]);
            const packed_ptr: u64 = @intFromPtr(out.ptr);
            return @bitCast(packed_ptr << 32 | @as(u64, out.len));
        }
    };
    @export(&S.handle, .{ .name = "hive_handle" });
    @export(&hiveAbiV1, .{ .name = "hive_abi_v1" });
    @export(&hiveAlloc, .{ .name = "hive_alloc" });
    @export(&hiveFree, .{ .name = "hive_free" });
}

// ---- native tests: python -m ziglang test hive/sdk/zig/edge_hive.zig -------------------------------

fn testHandler(req: *const Request, alloc: Allocator) !Response {
    if (std.mem.eql(u8, req.query, "fail")) return error.Nope;
    var res = Response.init(alloc, 201);
    try res.header("X-Method", req.method);
    try res.header("bad header", "dropped");
    try res.print("{s}|{s}|{s}", .{ req.path, req.header("ACCEPT") orelse "-", req.body });
    return res;
}

fn testEnvelope(alloc: Allocator, query: []const u8) ![]u8 {
    var out: std.ArrayList(u8) = .empty;
    const fields = [_][]const u8{ "GET", "/p", query };
    for (fields) |f| {
        try out.appendSlice(alloc, std.mem.asBytes(&std.mem.nativeToLittle(u32, @intCast(f.len))));
        try out.appendSlice(alloc, f);
    }
    const rest = [_][]const u8{ "accept", "*/*", "body" };
    try out.appendSlice(alloc, std.mem.asBytes(&std.mem.nativeToLittle(u32, 1)));
    for (rest) |f| {
        try out.appendSlice(alloc, std.mem.asBytes(&std.mem.nativeToLittle(u32, @intCast(f.len))));
        try out.appendSlice(alloc, f);
    }
    return out.toOwnedSlice(alloc);
}

test "dispatch decodes, runs the handler and encodes" {
    const env_bytes = try testEnvelope(std.testing.allocator, "");
    defer std.testing.allocator.free(env_bytes);
    const out = dispatch(testHandler, env_bytes);
    const expected = "\xc9\x00\x00\x00\x01\x00\x00\x00\x08\x00\x00\x00X-Method\x03\x00\x00\x00GET" ++
        "\x0b\x00\x00\x00/p|*/*|body";
    try std.testing.expectEqualSlices(u8, expected, out);
    const bad = dispatch(testHandler, env_bytes[0 .. env_bytes.len - 1]);
    try std.testing.expectEqual(@as(u32, 400), std.mem.readInt(u32, bad[0..4], .little));
}

test "handler errors become 500 handler_failed" {
    const env_bytes = try testEnvelope(std.testing.allocator, "fail");
    defer std.testing.allocator.free(env_bytes);
    const out = dispatch(testHandler, env_bytes);
    try std.testing.expectEqual(@as(u32, 500), std.mem.readInt(u32, out[0..4], .little));
    try std.testing.expect(std.mem.endsWith(u8, out, "{\"error\":\"handler_failed\",\"message\":\"Nope\"}"));
}

test "rfc3339" {
    try std.testing.expectEqualStrings("2026-11-24T19:40:00Z", &rfc3339(1795549200));
}
