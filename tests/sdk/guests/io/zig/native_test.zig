//! Natively (no host) every fetch and KV call answers no_io: `zig test` with the SDK as `edge_hive`
//! (tests/sdk/test_io_zig.py).
const std = @import("std");
const hive = @import("edge_hive");

test "fetch and KV answer no_io natively" {
    const alloc = std.testing.allocator;
    try std.testing.expectEqualStrings("no_io", hive.fetch(alloc, .{ .url = "https://api.example.com/" }).err.code);
    try std.testing.expectEqualStrings("no_io", hive.kv.get("default", "k").err.code);
    try std.testing.expectEqualStrings("no_io", hive.kv.set("default", "k", "v", .{}).err.code);
    try std.testing.expectEqualStrings("no_io", hive.kv.delete("default", "k").err.code);
    try std.testing.expectEqualStrings("no_io", hive.kv.list(alloc, "default", "", .{}).err.code);
    try std.testing.expectEqualStrings("no_io", hive.kv.incr("default", "k", 1, .{}).err.code);
    try std.testing.expect(hive.fetchWaitAny(alloc) == null);
}
