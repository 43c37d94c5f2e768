-- Test-only script: set one hash field, return what the hash now holds.
-- KEYS[1]  the hash
-- ARGV[1]  field
-- ARGV[2]  value
-- Returns  {fields added (int), HGETALL flat list, nil-free marker string}
local added = redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
return {added, redis.call("HGETALL", KEYS[1]), "done"}
