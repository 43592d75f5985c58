//! Fuzz the lab's zone-text parser: any text either fails with an error or parses, and what
//! parses can be written out with `zone_files()` and read back into the same zones.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx_lab::ZoneSet;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(zones) = ZoneSet::parse(&text, "<fuzz>", None) else {
        return;
    };
    let apexes = zones.apexes();
    let files = zones.zone_files();
    assert_eq!(
        files
            .iter()
            .map(|(apex, _)| apex.clone())
            .collect::<Vec<_>>(),
        apexes,
        "zone_files() and apexes() disagree"
    );

    // All zones written out, read back as one text: the same zones.
    let all: String = files.iter().map(|(_, file)| file.as_str()).collect();
    let reparsed = match ZoneSet::parse(&all, "<zone_files>", None) {
        Ok(reparsed) => reparsed,
        Err(e) => panic!(
            "zone_files() output does not parse: {e}\n--- input:\n{text}\n--- output:\n{all}"
        ),
    };
    assert_eq!(
        reparsed.apexes(),
        apexes,
        "zone_files() output has other apexes\n--- input:\n{text}\n--- output:\n{all}"
    );

    // Each file alone is exactly its own zone (what a server loading one file sees).
    for (apex, file) in &files {
        match ZoneSet::parse(file, "<zone_file>", None) {
            Ok(one) => assert_eq!(
                one.apexes(),
                vec![apex.clone()],
                "zone file of {apex} alone has other apexes\n--- input:\n{text}\n--- file:\n{file}"
            ),
            Err(e) => panic!(
                "zone file of {apex} does not parse alone: {e}\n--- input:\n{text}\n--- file:\n{file}"
            ),
        }
    }
});
