// The Zig SDK echo guest (tests/sdk/test_zig_sdk.py, test_sdk_common.py): the request method picks the
// behaviour (REBUILD, LOOKUP, CASE or any other: see tests/sdk/common.py); CASE names one of the cases in `special`.
const std = @import("std");
const hive = @import("edge_hive");

pub const panic = hive.panic;

fn eql(a: []const u8, b: []const u8) bool {
    return std.mem.eql(u8, a, b);
}

fn putField(res: *hive.Response, s: []const u8) !void {
    var n: [4]u8 = undefined;
    std.mem.writeInt(u32, &n, @intCast(s.len), .little);
    try res.append(&n);
    try res.append(s);
}

fn rd32(b: []const u8, at: usize) u32 {
    return std.mem.readInt(u32, b[at..][0..4], .little);
}

fn rebuild(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const b = req.body;
    var res = hive.Response.init(alloc, @intCast(rd32(b, 0)));
    const count = rd32(b, 4);
    var p: usize = 8;
    var i: u32 = 0;
    while (i < count) : (i += 1) {
        const nl = rd32(b, p);
        const vl = rd32(b, p + 4 + nl);
        try res.header(b[p + 4 .. p + 4 + nl], b[p + 8 + nl .. p + 8 + nl + vl]);
        p += 8 + nl + vl;
    }
    const bl = rd32(b, p);
    const body = b[p + 4 .. p + 4 + bl];
    try res.setBody("replaced");
    try res.setBody(body[0 .. bl / 2]);
    try res.append(body[bl / 2 ..]);
    return res;
}

fn lookup(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const first = req.header(req.query);
    var res = hive.Response.init(alloc, if (first != null) 200 else 404);
    var it = req.headerValues(req.query);
    while (it.next()) |v| try res.header("x-value", v);
    if (first) |f| try res.setBody(f);
    return res;
}

const Payload = struct { a: u32, s: []const u8, list: []const i32, ok: bool, none: ?u8 = null };

fn special(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const q = req.query;
    if (eql(q, "error")) return error.Boom;
    if (eql(q, "status")) return hive.Response.init(alloc, 600);
    if (eql(q, "oom")) {
        const huge = try alloc.alloc(u8, 512 << 20);
        huge[0] = 1;
        return hive.Response.text(alloc, 200, "unreachable");
    }
    if (eql(q, "panic")) @panic("boom");
    if (eql(q, "bad-headers")) {
        var res = hive.Response.init(alloc, 200);
        const big = try alloc.alloc(u8, hive.max_header_value + 1);
        @memset(big, 'v');
        try res.header("x bad", "v");
        try res.header("x-a", "a\r\nb");
        try res.header("", "v");
        try res.header("x-nul", "a\x00b");
        try res.header("x-big", big);
        try res.header("x-max", big[0..hive.max_header_value]);
        var i: usize = 0;
        while (i < 300) : (i += 1) try res.header("x-many", "1");
        try res.print("{d}", .{res.headers.items.len});
        return res;
    }
    if (eql(q, "json")) {
        return hive.Response.json(alloc, 201, Payload{ .a = 1, .s = "é\"\n\x01</", .list = &.{ -1, 2 }, .ok = true });
    }
    if (eql(q, "parse")) {
        const p = req.json(Payload, alloc) catch |e| return hive.Response.text(alloc, 422, @errorName(e));
        return hive.Response.json(alloc, 200, p);
    }
    if (eql(q, "text")) return hive.Response.text(alloc, 200, "plain é");
    if (eql(q, "bytes")) return hive.Response.bytes(alloc, 200, "application/octet-stream", "\x00\xff\x00");
    if (eql(q, "env")) {
        var res = hive.Response.init(alloc, 200);
        try res.print("{s}|{s}|{s}", .{ hive.env("GREETING") orelse "-", hive.env("EMPTY") orelse "-", hive.env("MISSING") orelse "-" });
        return res;
    }
    if (eql(q, "log")) {
        hive.log.debug("debug {d}", .{1});
        hive.log.info("info {s}", .{"two"});
        hive.log.warn("warn", .{});
        hive.log.err("err", .{});
        const long = try alloc.alloc(u8, 20000);
        @memset(long, 'x');
        hive.log.info("{s}", .{long});
        return hive.Response.init(alloc, 204);
    }
    if (eql(q, "time")) {
        var res = hive.Response.init(alloc, 200);
        const a = hive.rfc3339(0);
        const b = hive.rfc3339(951868799);
        const c = hive.rfc3339(4102444800);
        try res.print("{s} {s} {s} {d}", .{ &a, &b, &c, hive.now() });
        return res;
    }
    if (eql(q, "query")) {
        const tmp = hive.Request{ .method = "", .path = "", .query = req.body, .headers = &.{}, .body = "" };
        var res = hive.Response.init(alloc, 200);
        const names = [_][]const u8{ "a", "b", "c", "d", "é" };
        for (names) |n| {
            const v = try tmp.queryParam(alloc, n);
            try res.print("{s}={s};", .{ n, v orelse "(null)" });
        }
        return res;
    }
    if (eql(q, "big")) {
        var res = hive.Response.init(alloc, 200);
        var i: usize = 0;
        while (i < 100000) : (i += 1) try res.print("{d:0>9}\n", .{i});
        return res;
    }
    return hive.Response.text(alloc, 404, "unknown case");
}

pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    if (eql(req.method, "REBUILD")) return rebuild(req, alloc);
    if (eql(req.method, "LOOKUP")) return lookup(req, alloc);
    if (eql(req.method, "CASE")) return special(req, alloc);
    var res = hive.Response.init(alloc, 200);
    try putField(&res, req.method);
    try putField(&res, req.path);
    try putField(&res, req.query);
    var n: [4]u8 = undefined;
    std.mem.writeInt(u32, &n, @intCast(req.headers.len), .little);
    try res.append(&n);
    for (req.headers) |h| {
        try putField(&res, h.name);
        try putField(&res, h.value);
    }
    try putField(&res, req.body);
    return res;
}

comptime {
    hive.exportHandler(handler);
}
