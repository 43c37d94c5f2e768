-- lqs_publish: store a new message and schedule it, unless its deduplication key names one.
-- KEYS[1] message hash   KEYS[2] due ZSET   KEYS[3] live-id SET   KEYS[4] dedup key (optional)
-- ARGV[1] message id   ARGV[2] due ms   ARGV[3] dedup window ms   ARGV[4..] hash field, value pairs
-- Returns {message id, 0} when stored, {existing id, 1} when deduplicated.
if KEYS[4] then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    return {existing, 1}
  end
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3])
end
local pairs_ = {}
for i = 4, #ARGV do
  pairs_[#pairs_ + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(pairs_))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return {ARGV[1], 0}
