-- Which lines could not be read, by reason, hour by hour?
SELECT date, hour, reason, count(*) AS lines, max(raw_len) AS longest_bytes
FROM rejects
GROUP BY date, hour, reason
ORDER BY date, hour, lines DESC, reason
