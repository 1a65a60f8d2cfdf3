-- Remove a job from every structure of its topic (cancel, delete).
-- KEYS[1] queue      sorted set
-- KEYS[2] leases     sorted set
-- KEYS[3] entities   hash: entity id -> job id
-- KEYS[4] scheduled  sorted set
-- KEYS[5] schedprio  hash
-- ARGV[1] job id
-- ARGV[2] entity id or ""
-- Returns 1 if the job was queued or scheduled, 0 otherwise.
local removed = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return removed
