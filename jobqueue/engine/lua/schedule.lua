-- Hold jobs until they are due (run_after, delay, retry backoff).
-- KEYS[1] scheduled  sorted set: job id -> due time (ms)
-- KEYS[2] schedprio  hash: job id -> priority, used when the job is promoted
-- KEYS[3] entities   hash: entity id -> job id
-- KEYS[4] leases     sorted set: a scheduled retry is no longer leased
-- ARGV    quadruples: job id, due time in ms, priority, entity id or ""
-- Returns the number of jobs scheduled.
for i = 1, #ARGV, 4 do
  local id = ARGV[i]
  redis.call('ZADD', KEYS[1], tonumber(ARGV[i + 1]), id)
  redis.call('HSET', KEYS[2], id, ARGV[i + 2])
  redis.call('ZREM', KEYS[4], id)
  if ARGV[i + 3] ~= '' then
    redis.call('HSET', KEYS[3], ARGV[i + 3], id)
  end
end
return #ARGV / 4
