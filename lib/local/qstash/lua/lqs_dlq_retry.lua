-- lqs_dlq_retry: turn a dead-lettered message back into a new, due message (retried = 0).
-- KEYS[1] DLQ entry hash   KEYS[2] DLQ index ZSET   KEYS[3] new message hash   KEYS[4] due ZSET
-- KEYS[5] live-id SET
-- ARGV[1] DLQ id   ARGV[2] new message id   ARGV[3] now ms
-- Returns the new message id, or false when the DLQ entry does not exist.
local entry = redis.call('HGETALL', KEYS[1])
if #entry == 0 then
  return false
end
local fields = {}
for i = 1, #entry, 2 do
  local name = entry[i]
  if string.sub(name, 1, 4) ~= 'dlq_' then
    fields[#fields + 1] = name
    fields[#fields + 1] = entry[i + 1]
  end
end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('HSET', KEYS[3], 'id', ARGV[2], 'retried', '0', 'created_at_ms', ARGV[3],
  'not_before_ms', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return ARGV[2]
