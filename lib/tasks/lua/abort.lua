-- abort: undo an admission whose publish failed (producer). Leaves nothing behind.
--
-- KEYS[1] task hash   KEYS[2] idempotency key   KEYS[3] per-user lock   KEYS[4] quota
-- KEYS[5] queue pending counter   KEYS[6] queue waiting ZSET   KEYS[7] rate window ZSET
-- KEYS[8] event stream   KEYS[9] queue specs hash   KEYS[10] client-address rate window
-- ARGV[1] task id
--
-- Returns 1 when undone, 0 when the task was not queued (already gone or started).

local task_id = ARGV[1]
local t = redis.call('HMGET', KEYS[1], 'status', 'cost')
if t[1] ~= 'queued' then
  return 0
end
local cost = tonumber(t[2] or '0')
if cost > 0 then redis.call('INCRBY', KEYS[4], cost) end
if redis.call('GET', KEYS[3]) == task_id then redis.call('DEL', KEYS[3]) end
local idem = redis.call('GET', KEYS[2])
if idem and cjson.decode(idem).id == task_id then redis.call('DEL', KEYS[2]) end
if redis.call('ZREM', KEYS[6], task_id) == 1 then
  if tonumber(redis.call('DECR', KEYS[5])) <= 0 then redis.call('DEL', KEYS[5]) end
end
redis.call('ZREM', KEYS[7], task_id)
redis.call('ZREM', KEYS[10], task_id)
redis.call('HDEL', KEYS[9], task_id)
redis.call('DEL', KEYS[1], KEYS[8])
return 1
