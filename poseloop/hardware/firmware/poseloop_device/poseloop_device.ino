// poseloop reference device for Arduino-class boards (Uno, Nano, Mega, ...).
// The protocol lives in poseloop_core.c; this file maps it onto the board.
// Wire protocol and flashing: see ../README.md.
#include "poseloop_core.h"

// Output channel n drives digital pin PINS[n]: channels 0..7 are pins 2..9.
static const uint8_t PINS[PL_CHANNELS] = {2, 3, 4, 5, 6, 7, 8, 9};
// The camera's exposure strobe (see ../README.md, trigger timing).
static const uint8_t STROBE_PIN = A0;

#if defined(PCINT1_vect) && defined(__AVR_ATmega328P__)
// Uno / Nano: A0 is PCINT8; its edge is stamped in the interrupt (within a few us).
ISR(PCINT1_vect) {
  uint32_t t = micros();
  if (digitalRead(STROBE_PIN) == HIGH) {
    pl_strobe(t);
  }
}
#define STROBE_INTERRUPT 1
#else
// Other boards: the strobe is polled in loop() (stamped within one pass of the loop).
static uint8_t strobe_level;
#define STROBE_INTERRUPT 0
#endif

void pl_board_output(uint8_t channel, uint8_t high) {
  digitalWrite(PINS[channel], high ? HIGH : LOW);
}

uint32_t pl_board_millis(void) {
  return millis();
}

uint32_t pl_board_micros(void) {
  return micros();  // 4 us steps on a 16 MHz board
}

void pl_board_reply(const char *line) {
  size_t len = strlen(line);
  if ((size_t)Serial.availableForWrite() >= len) {  // a host that does not read never stalls us
    Serial.write(line, len);
  }
}

void setup() {
  for (uint8_t channel = 0; channel < PL_CHANNELS; channel++) {
    pinMode(PINS[channel], OUTPUT);
  }
  pinMode(STROBE_PIN, INPUT);
#if STROBE_INTERRUPT
  *digitalPinToPCMSK(STROBE_PIN) |= _BV(digitalPinToPCMSKbit(STROBE_PIN));
  *digitalPinToPCICR(STROBE_PIN) |= _BV(digitalPinToPCICRbit(STROBE_PIN));
#endif
  pl_init();  // all outputs off
  Serial.begin(115200);
}

void loop() {
#if !STROBE_INTERRUPT
  uint8_t level = digitalRead(STROBE_PIN) == HIGH;
  if (level && !strobe_level) {
    pl_strobe(micros());
  }
  strobe_level = level;
#endif
  while (Serial.available() > 0) {
    pl_receive((char)Serial.read());
  }
  pl_poll();
}
