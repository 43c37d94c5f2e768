-- lqs_cancel: delete a message that has not been delivered yet (an in-flight attempt finishes,
-- but is never retried).
-- KEYS[1] message hash   KEYS[2] due ZSET   KEYS[3] live-id SET
-- KEYS[4] flow-control waitlist (only with a flow-control key)
-- ARGV[1] message id
-- Returns 1 when cancelled, 0 when no such message exists.
local id = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], id)
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], id)
redis.call('SREM', KEYS[3], id)
if KEYS[4] then
  redis.call('ZREM', KEYS[4], id)
end
return 1
