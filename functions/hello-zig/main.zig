//! hello-zig: greets the "name" field of a JSON body, or the World.
const std = @import("std");
const hive = @import("edge_hive");

/// Panics are logged through hive.log before the instance traps (the host answers 502).
pub const panic = hive.panic;
/// std.log goes to hive.log too.
pub const std_options: std.Options = .{ .logFn = hive.logFn };

const Greeting = struct {
    name: ?[]const u8 = null,
};

pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    // No body, not JSON, no "name", or "name" not a string: greet the World.
    const body = req.json(Greeting, alloc) catch Greeting{};
    const name = body.name orelse "World";

    // RFC 3339 UTC to the second, from the WASI realtime clock.
    const stamp = hive.rfc3339(hive.now());

    return hive.Response.json(alloc, 200, .{
        .message = try std.fmt.allocPrint(alloc, "Hello, {s}!", .{name}),
        .timestamp = @as([]const u8, &stamp),
    });
}

comptime {
    hive.exportHandler(handler);
}
