//! The Zig SDK's fetch and KV test guest (tests/sdk/test_io_zig.py; the protocol is in
//! tests/sdk/io_vectors.py). FETCH, SEND, ANY and KV requests drive one SDK call from the request's
//! fields and describe its result; GET .../proxy and .../count are the end-to-end cases on a server.
const std = @import("std");
const hive = @import("edge_hive");

pub const panic = hive.panic;
pub const std_options: std.Options = .{ .logFn = hive.logFn };

const Allocator = std.mem.Allocator;

fn failed(alloc: Allocator, e: hive.IoError) !hive.Response {
    var res = hive.Response.init(alloc, 200);
    try res.header("x-error", e.code);
    try res.setBody(e.message);
    return res;
}

fn fetched(alloc: Allocator, result: hive.Result(hive.FetchResponse)) !hive.Response {
    const up = switch (result) {
        .ok => |up| up,
        .err => |e| return failed(alloc, e),
    };
    var res = hive.Response.init(alloc, 200);
    try res.header("x-status", try std.fmt.allocPrint(alloc, "{d}", .{up.status}));
    for (up.headers) |h| try res.header(h.name, h.value);
    try res.setBody(up.body);
    return res;
}

fn fetchCase(req: *const hive.Request, alloc: Allocator) !hive.Response {
    const f: hive.FetchRequest = .{ .method = req.query, .url = req.path, .headers = req.headers, .body = req.body };
    if (std.mem.eql(u8, req.method, "FETCH")) return fetched(alloc, hive.fetch(alloc, f));
    const pending = switch (hive.fetchSend(f)) {
        .ok => |p| p,
        .err => |e| return failed(alloc, e),
    };
    if (std.mem.eql(u8, req.method, "SEND")) return fetched(alloc, pending.wait(alloc));
    const done = hive.fetchWaitAny(alloc) orelse return hive.Response.text(alloc, 500, "nothing pending");
    if (done.handle != pending.handle) return hive.Response.text(alloc, 500, "wrong handle");
    return fetched(alloc, done.result);
}

fn num(comptime T: type, req: *const hive.Request, name: []const u8, default: T) T {
    const v = req.header(name) orelse return default;
    return std.fmt.parseInt(T, v, 10) catch default;
}

fn kvCase(req: *const hive.Request, alloc: Allocator) !hive.Response {
    const store = req.path;
    const key = req.header("k") orelse "";
    const op = req.query;
    var res = hive.Response.init(alloc, 200);
    if (std.mem.eql(u8, op, "get")) {
        switch (hive.kv.get(store, key)) {
            .err => |e| return failed(alloc, e),
            .ok => |value| {
                try res.header("x-found", if (value != null) "1" else "0");
                try res.setBody(value orelse "");
            },
        }
    } else if (std.mem.eql(u8, op, "set")) {
        switch (hive.kv.set(store, key, req.body, .{ .ttl_ms = num(u64, req, "ttl", 0) })) {
            .err => |e| return failed(alloc, e),
            .ok => {},
        }
    } else if (std.mem.eql(u8, op, "delete")) {
        switch (hive.kv.delete(store, key)) {
            .err => |e| return failed(alloc, e),
            .ok => |deleted| try res.header("x-deleted", if (deleted) "1" else "0"),
        }
    } else if (std.mem.eql(u8, op, "list")) {
        const options: hive.kv.ListOptions = .{ .cursor = req.header("cursor") orelse "", .limit = num(u32, req, "limit", 100) };
        switch (hive.kv.list(alloc, store, key, options)) {
            .err => |e| return failed(alloc, e),
            .ok => |page| {
                for (page.keys) |k| try res.header("x-key", k);
                if (page.cursor) |c| try res.header("x-cursor", c);
            },
        }
    } else if (std.mem.eql(u8, op, "incr")) {
        switch (hive.kv.incr(store, key, num(i64, req, "delta", 1), .{ .ttl_ms = num(u64, req, "ttl", 0) })) {
            .err => |e| return failed(alloc, e),
            .ok => |n| try res.header("x-value", try std.fmt.allocPrint(alloc, "{d}", .{n})),
        }
    } else {
        return hive.Response.text(alloc, 404, "unknown op");
    }
    return res;
}

fn errorJson(alloc: Allocator, e: hive.IoError) !hive.Response {
    return hive.Response.json(alloc, 200, .{ .@"error" = e.code });
}

pub fn handler(req: *const hive.Request, alloc: Allocator) !hive.Response {
    const m = req.method;
    if (std.mem.eql(u8, m, "FETCH") or std.mem.eql(u8, m, "SEND") or std.mem.eql(u8, m, "ANY")) return fetchCase(req, alloc);
    if (std.mem.eql(u8, m, "KV")) return kvCase(req, alloc);
    if (std.mem.endsWith(u8, req.path, "/proxy")) {
        return switch (hive.fetch(alloc, .{ .url = req.header("x-url") orelse "" })) {
            .ok => |up| hive.Response.bytes(alloc, @intCast(up.status), "text/plain", up.body),
            .err => |e| errorJson(alloc, e),
        };
    }
    if (std.mem.endsWith(u8, req.path, "/count")) {
        const count = switch (hive.kv.incr("default", "visits", 1, .{})) {
            .ok => |n| n,
            .err => |e| return errorJson(alloc, e),
        };
        const stored = switch (hive.kv.get("default", "visits")) {
            .ok => |v| v orelse "",
            .err => |e| return errorJson(alloc, e),
        };
        return hive.Response.json(alloc, 200, .{ .count = count, .stored = stored });
    }
    return hive.Response.text(alloc, 404, "unknown case");
}

comptime {
    hive.exportHandler(handler);
}
