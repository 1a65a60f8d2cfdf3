-- Hold jobs until they are due (run_after, delay, retry backoff).
-- KEYS[1] scheduled  sorted set: job id -> due time (ms)
-- KEYS[2] schedprio  hash: job id -> priority, used when the job is promoted
-- KEYS[3] entities   hash: entity id -> job id
-- KEYS[4] leases     sorted set: a scheduled retry is no longer leased
-- KEYS[5] metrics    hash: the topic's counters and histogram buckets
-- ARGV[1] a tally for the topic's metrics hash: "field=integer" pairs, space-separated, or ""
-- ARGV[2..] quadruples: job id, due time in ms, priority, entity id or ""
-- Returns the number of jobs scheduled.
for i = 2, #ARGV, 4 do
  local id = ARGV[i]
  redis.call('ZADD', KEYS[1], tonumber(ARGV[i + 1]), id)
  redis.call('HSET', KEYS[2], id, ARGV[i + 2])
  redis.call('ZREM', KEYS[4], id)
  if ARGV[i + 3] ~= '' then
    redis.call('HSET', KEYS[3], ARGV[i + 3], id)
  end
end
for field, amount in string.gmatch(ARGV[1], '(%S+)=(%S+)') do
  redis.call('HINCRBY', KEYS[5], field, amount)
end
return (#ARGV - 1) / 4
