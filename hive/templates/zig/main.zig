//! {{name}}: an Edge Hive function in Zig. API: docs/sdk-zig.md
const std = @import("std");
const hive = @import("edge_hive");

/// Panics are logged through hive.log before the instance traps (the host answers 502).
pub const panic = hive.panic;
/// std.log goes to hive.log too.
pub const std_options: std.Options = .{ .logFn = hive.logFn };

const Input = struct {
    name: ?[]const u8 = null,
};

pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    // `alloc` is an arena freed after the request: no need to free anything.
    const input = req.json(Input, alloc) catch Input{};
    const name = input.name orelse "World";
    hive.log.info("{s} {s}", .{ req.method, req.path });

    return hive.Response.json(alloc, 200, .{
        .message = try std.fmt.allocPrint(alloc, "Hello, {s}!", .{name}),
    });
}

comptime {
    hive.exportHandler(handler);
}
