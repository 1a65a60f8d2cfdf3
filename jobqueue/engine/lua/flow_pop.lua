-- Lease the next jobs of a topic that has flow control: a rate limit, a limit of running
-- jobs per job key, and round-robin between keys. Optionally acknowledges a finished job
-- first (as ack_pop.lua), so a worker between two jobs still makes one round trip.
--
-- Rate limit: GCRA (the generic cell rate algorithm), the token bucket written as one
-- number. With an emission interval T (the period divided by the rate) and a burst B,
-- the script keeps the "theoretical arrival time" TAT: the time at which the bucket is
-- full again. A start is allowed while TAT - now <= (B - 1) * T, and each start adds T
-- to max(TAT, now). It is exactly a bucket of B tokens refilled one per T, but its state
-- is a single string (no refill bookkeeping, nothing to repair when it is lost: a missing
-- TAT is a full bucket), and the time until the next token is TAT - (B - 1) * T - now,
-- which the script returns so a limited worker sleeps instead of polling. Tokens are taken
-- only for jobs actually leased in the same call, so no token is spent without a job and
-- no job is leased without one. Time is the Redis server's clock unless ARGV[3] is given.
--
-- Fairness: a key's jobs wait in the keyqueue (see push_flow.lua), and only one of them,
-- its head (KEYS[7]), is in the queue. Leasing a head moves the key's
-- next job into the queue with a fresh sequence number: to the back of its priority, so
-- within a priority the keys take turns. Jobs without a key are queued as before.
--
-- Per-key concurrency: the keyrun set holds "<key>\t<id>" for each leased keyed job. A member whose lease
-- is gone (acknowledged, requeued by the reaper, removed) no longer counts and is dropped
-- when seen, so acknowledging, failing or losing a lease releases its place without any
-- other script knowing of keys. Queued jobs whose key is full are skipped, not dequeued.
-- A pop that skipped some sets the keyfull flag (cleared by a pop that looked through the
-- queue and skipped none); while it is set, the end of a lease (this script's ack, ack.lua,
-- a retry's schedule.lua, flow_remove.lua) pushes to the wake list, so an idle worker
-- blocks on it as for a push instead of asking again and again.
--
-- The keyqueue and keyrun sets are read by key with ZRANGEBYLEX: their members all have
-- score 0 and sort by text, "<key>\t<14 hex digits of the job's queue score><id>" and
-- "<key>\t<id>" (a job key holds no whitespace). Every key below carries the topic's hash tag.
-- KEYS[1]  queue     sorted set: job id -> score (see push.lua)
-- KEYS[2]  leases    sorted set: job id -> lease deadline (ms)
-- KEYS[3]  paused    flag: while it exists nothing is leased
-- KEYS[4]  lock      sorted set: slot owner token -> expiry (ms), the topic's semaphore
-- KEYS[5]  seq       counter giving each push its place within a priority
-- KEYS[6]  rate      string: the limiter's TAT in ms
-- KEYS[7]  keyheads  hash: job key -> the id of its job in the queue
-- KEYS[8]  keyof     hash: job id -> "<key>\t<score in hex>" (or "<key>"), for queued keyed jobs
-- KEYS[9]  keyqueue  sorted set (by text): the keyed jobs waiting behind their key's head
-- KEYS[10] keyrun    sorted set (by text): the leased keyed jobs, while a key limit is set
-- KEYS[11] entities  hash: entity id -> job id
-- KEYS[12] abort     set of job ids asked to abort
-- KEYS[13] metrics   hash: the topic's counters
-- KEYS[14] keyfull   flag: a pop passed over jobs whose key was full
-- KEYS[15] wake      list that idle workers block on (BLPOP)
-- ARGV[1]  lease length in seconds
-- ARGV[2]  how many jobs at most
-- ARGV[3]  now in ms, or "" for the Redis server's clock
-- ARGV[4]  the caller's slot token, or "" to lease without holding a slot
-- ARGV[5]  emission interval in ms (period / rate), or "" for no rate limit
-- ARGV[6]  burst: tokens the bucket holds (>= 1)
-- ARGV[7]  running jobs allowed per job key, or "" for no limit
-- ARGV[8]  a finished job id to acknowledge first, or ""
-- ARGV[9]  its entity id or ""
-- ARGV[10] its tally for the metrics hash ("field=integer" pairs), or ""
-- Returns {wait, id, id, ...}: the leased ids, best first, after the milliseconds to wait
-- before asking again (0: no reason to wait, or wait for a wake; when rate limited, until
-- the next token).
local SHIFT = 17592186044416 -- 2^44, as in push.lua
local KEYFULL_TTL_MS = 60000 -- a flag no pop renews goes by itself
local SCAN = 256 -- queued jobs looked at per call, at most (those of full keys are passed over)
if ARGV[8] ~= '' then
  if redis.call('ZREM', KEYS[2], ARGV[8]) == 1 and redis.call('EXISTS', KEYS[14]) == 1 then
    redis.call('RPUSH', KEYS[15], '1')
    redis.call('LTRIM', KEYS[15], 0, 63)
  end
  if ARGV[9] ~= '' and redis.call('HGET', KEYS[11], ARGV[9]) == ARGV[8] then
    redis.call('HDEL', KEYS[11], ARGV[9])
  end
  redis.call('SREM', KEYS[12], ARGV[8])
  for field, amount in string.gmatch(ARGV[10], '(%S+)=(%S+)') do
    redis.call('HINCRBY', KEYS[13], field, amount)
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0}
end
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[4], ARGV[4])
  if not expiry or tonumber(expiry) <= now then
    return {0}
  end
end
local want = tonumber(ARGV[2])
local interval = tonumber(ARGV[5])
local tat = now
if interval then
  local tau = (tonumber(ARGV[6]) - 1) * interval
  tat = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), now)
  local ahead = tat - now
  if ahead > tau then
    return {math.ceil(ahead - tau)}
  end
  want = math.min(want, math.floor((tau - ahead) / interval) + 1)
end
local limit = tonumber(ARGV[7])
local deadline = now + tonumber(ARGV[1]) * 1000
local running = {}
local function running_of(key)
  local n = running[key]
  if n == nil then
    n = 0
    local from = #key + 2
    local members = redis.call('ZRANGEBYLEX', KEYS[10], string.format('[%s\t', key), string.format('(%s\n', key))
    for _, member in ipairs(members) do
      if redis.call('ZSCORE', KEYS[2], string.sub(member, from)) then
        n = n + 1
      else
        redis.call('ZREM', KEYS[10], member)
      end
    end
    running[key] = n
  end
  return n
end
local ids = {}
local full = false
local skipped, scanned = 0, 0
while #ids < want and scanned < SCAN do
  -- One at a time: taking a key's head moves its next job into the queue, maybe ahead of
  -- the jobs that followed.
  local candidates = redis.call('ZRANGE', KEYS[1], skipped, skipped)
  if #candidates == 0 then break end
  for _, id in ipairs(candidates) do
    scanned = scanned + 1
    local key = redis.call('HGET', KEYS[8], id)
    key = key and string.match(key, '^[^\t]*')
    if key and limit and running_of(key) >= limit then
      full = true
      skipped = skipped + 1
    else
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], deadline, id)
      ids[#ids + 1] = id
      if key then
        redis.call('HDEL', KEYS[8], id)
        if limit then
          redis.call('ZADD', KEYS[10], 0, string.format('%s\t%s', key, id))
          running[key] = running[key] + 1
        end
        if redis.call('HGET', KEYS[7], key) == id then
          local nxt = redis.call('ZRANGEBYLEX', KEYS[9], string.format('[%s\t', key), string.format('(%s\n', key),
                                 'LIMIT', 0, 1)[1]
          if nxt then
            redis.call('ZREM', KEYS[9], nxt)
            local score = tonumber(string.sub(nxt, #key + 2, #key + 15), 16)
            local next_id = string.sub(nxt, #key + 16)
            redis.call('ZADD', KEYS[1], math.floor(score / SHIFT) * SHIFT + redis.call('INCR', KEYS[5]), next_id)
            redis.call('HSET', KEYS[7], key, next_id)
          else
            redis.call('HDEL', KEYS[7], key)
          end
        end
      end
    end
  end
end
if full then
  redis.call('SET', KEYS[14], '1', 'PX', KEYFULL_TTL_MS)
elseif #ids < want then
  redis.call('DEL', KEYS[14])
end
if interval and #ids > 0 then
  local new_tat = tat + #ids * interval
  -- Every digit of the double, so the next call compares exactly what this one computed.
  redis.call('SET', KEYS[6], string.format('%.17g', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
end
local result = {0}
for _, id in ipairs(ids) do
  result[#result + 1] = id
end
return result
