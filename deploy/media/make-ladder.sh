#!/usr/bin/env bash
# A real HLS (fMP4/CMAF) and DASH ladder from a synthetic source (test pattern + tone),
# with Debian's ffmpeg: 4 renditions (426x240 400k, 640x360 800k, 1280x720 2500k,
# 1920x1080 5000k), 2 s segments with aligned IDRs, AAC in every rung. The recipe is
# shared/docs/VIDEO.md §9's, including its fix for the CODECS attribute that ffmpeg 5.1
# leaves out when it stream-copies from MP4.
#
#   deploy/media/make-ladder.sh OUT_DIR [SECONDS=60] [PRESET=veryfast]
#
# Serve OUT_DIR as an origin's content directory: /hls/master.m3u8 and /dash/manifest.mpd.
set -euo pipefail

out="${1:?usage: make-ladder.sh OUT_DIR [SECONDS] [PRESET]}"
dur="${2:-60}"
preset="${3:-veryfast}"
command -v ffmpeg >/dev/null || { echo "make-ladder: ffmpeg not found (apt-get install ffmpeg)" >&2; exit 1; }
case "$dur" in ''|*[!0-9]*) echo "make-ladder: SECONDS must be a whole number, got '$dur'" >&2; exit 1;; esac
[ "$dur" -ge 2 ] || { echo "make-ladder: SECONDS must be at least 2" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/mezz" "$work/hls" "$work/dash"
start=$(date +%s.%N)

V="-c:v libx264 -preset $preset -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 -x264-params open-gop=0:scenecut=0"
A="-c:a aac -b:a 128k -ar 48000 -ac 2"
# shellcheck disable=SC2086 # $V and $A are option lists
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1920x1080:rate=30:duration=$dur" \
  -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000:duration=$dur" \
  -filter_complex "[0:v]split=4[a][b][c][d];[a]scale=426:240[o0];[b]scale=640:360[o1];[c]scale=1280:720[o2];[d]null[o3]" \
  -map '[o0]' -map 1:a $V -profile:v main -b:v 400k  -maxrate 440k  -bufsize 800k   $A "$work/mezz/r0.mp4" \
  -map '[o1]' -map 1:a $V -profile:v main -b:v 800k  -maxrate 880k  -bufsize 1600k  $A "$work/mezz/r1.mp4" \
  -map '[o2]' -map 1:a $V -profile:v high -b:v 2500k -maxrate 2750k -bufsize 5000k  $A "$work/mezz/r2.mp4" \
  -map '[o3]' -map 1:a $V -profile:v high -b:v 5000k -maxrate 5500k -bufsize 10000k $A "$work/mezz/r3.mp4"

inputs=(-i ../mezz/r0.mp4 -i ../mezz/r1.mp4 -i ../mezz/r2.mp4 -i ../mezz/r3.mp4)
(cd "$work/hls" && ffmpeg -hide_banner -loglevel error -y "${inputs[@]}" \
  -map 0:v -map 0:a -map 1:v -map 1:a -map 2:v -map 2:a -map 3:v -map 3:a -c copy \
  -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_type fmp4 -hls_flags independent_segments \
  -master_pl_name master.m3u8 -var_stream_map "v:0,a:0 v:1,a:1 v:2,a:2 v:3,a:3" \
  -hls_segment_filename 'v%v/seg_%05d.m4s' 'v%v/index.m3u8')
(cd "$work/dash" && ffmpeg -hide_banner -loglevel error -y "${inputs[@]}" \
  -map 0:v -map 1:v -map 2:v -map 3:v -map 0:a -c copy -f dash \
  -seg_duration 2 -use_template 1 -use_timeline 0 \
  -adaptation_sets "id=0,streams=v id=1,streams=a" manifest.mpd)

# CODECS: the three bytes after the avcC box's version are profile, constraints, level.
master="$work/hls/master.m3u8"
for i in 0 1 2 3; do
  init="$(ls "$work/hls/v$i"/init*.mp4 2>/dev/null | head -1 || true)"
  [ -n "$init" ] || init="$(ls "$work/hls"/init_"$i".mp4 2>/dev/null | head -1 || true)"
  [ -n "$init" ] || { echo "make-ladder: no init segment for rung $i" >&2; exit 1; }
  off=$(grep -obUaP 'avcC' "$init" | head -1 | cut -d: -f1)
  hex=$(od -An -tx1 -j $((off + 5)) -N3 "$init" | tr -d ' \n')
  [ "${#hex}" -eq 6 ] || { echo "make-ladder: cannot read avcC of $init" >&2; exit 1; }
  # The rung's STREAM-INF is the line before its URI.
  awk -v uri="v$i/index.m3u8" -v codecs="avc1.$hex,mp4a.40.2" '
    { lines[NR] = $0 }
    END {
      for (n = 1; n <= NR; n++) {
        if (lines[n + 1] == uri && lines[n] ~ /^#EXT-X-STREAM-INF:/ && lines[n] !~ /CODECS=/)
          lines[n] = lines[n] ",CODECS=\"" codecs "\",FRAME-RATE=30.000"
        print lines[n]
      }
    }' "$master" > "$master.tmp" && mv "$master.tmp" "$master"
done

mkdir -p "$out"
rm -rf "$out/hls" "$out/dash"
mv "$work/hls" "$work/dash" "$out/"
end=$(date +%s.%N)
printf 'make-ladder: %s s ladder (%s) in %.1f s: %s/hls/master.m3u8, %s/dash/manifest.mpd, %s\n' \
  "$dur" "$preset" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$out" "$out" "$(du -sh "$out" | cut -f1)"
