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
//! Natively (`zig test`), `dispatch(handler, envelope)` runs a handler on an envelope without the
//! exports; log lines go to stderr, `now()` is 0 and `env()` is null there.
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
    for (loadEnviron()) |kv| {
        if (kv.len > name.len and kv[name.len] == '=' and std.mem.eql(u8, kv[0..name.len], name))
            return kv[name.len + 1 ..];
    }
    return null;
}

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
